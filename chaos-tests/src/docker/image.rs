//! The image under test: built from `ops/dist/docker/` plus the static binaries of
//! `$CONCLAVE_DIST`, exactly the context install.md tells operators to build (that folder with
//! the two binaries copied in), under a tag of this test's own. Removed on drop.
//!
//! One image per test: with nextest every test is its own process, and a scratch image of two
//! binaries builds in a few seconds (the suite prints the time), so sharing it across
//! processes would buy little and need a cross-process reference count.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::{DockerEnv, PREFIX, docker, docker_async};

/// The files of `ops/dist/docker/` the Dockerfile copies (besides the binaries).
const CONTEXT_FILES: [&str; 5] = [
    "Dockerfile",
    "passwd",
    "group",
    "volume-data.txt",
    "volume-kek.txt",
];

/// `ops/dist/docker/` in this source tree.
pub fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops/dist/docker")
}

/// A built image; `docker rmi` on drop.
#[derive(Debug)]
pub struct TestImage {
    pub tag: String,
}

impl TestImage {
    /// Builds `conclave-test-<suffix>:latest`. Prints how long the build took.
    pub async fn build(env: &DockerEnv, suffix: &str) -> Result<TestImage> {
        let ctx = tempfile::Builder::new()
            .prefix("conclave-image-")
            .tempdir()
            .context("temp dir for the build context")?;
        for f in CONTEXT_FILES {
            std::fs::copy(docker_dir().join(f), ctx.path().join(f))
                .with_context(|| format!("copy ops/dist/docker/{f}"))?;
        }
        for bin in ["conclave", "conclavectl"] {
            std::fs::copy(env.dist.join(bin), ctx.path().join(bin))
                .with_context(|| format!("copy {}/{bin}", env.dist.display()))?;
        }
        let tag = format!("{PREFIX}{suffix}:latest");
        let started = Instant::now();
        let path = ctx.path().to_string_lossy().into_owned();
        // From here on the image may exist: the guard removes it if the build fails half-way.
        let image = TestImage { tag };
        docker_async(&["build", "-q", "-t", &image.tag, &path]).await?;
        eprintln!(
            "docker image {} built in {:.1?}",
            image.tag,
            started.elapsed()
        );
        Ok(image)
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        if let Err(e) = docker(&["rmi", "-f", &self.tag]) {
            let msg = format!("{e:#}");
            if !msg.contains("No such image") {
                eprintln!("cleanup: {msg}");
            }
        }
    }
}
