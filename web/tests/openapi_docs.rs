//! The OpenAPI description (`web::openapi`) and docs/api.md list the same operations: every
//! route the document names is described, and every described operation is documented.
//!
//! The document names routes in headings (``### `GET /api/v1/channels/{name}` ``), in the
//! first cell of table rows (``| `POST /api/v1/dns/records` |``, ``| `PUT` / `DELETE /api/...` |``)
//! and at the start of definition paragraphs (`` `POST /api/v1/join` — ... ``). Parameter names
//! and query strings are normalised away (`{name}` and `{user}` both become `{}`).
//! `OPENAPI_DUMP=<file>` also writes the description there (for schemathesis by hand).

use std::collections::BTreeSet;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn normalise(path: &str) -> String {
    let path = path.split(['?', '[']).next().unwrap_or(path);
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// The backticked spans of a piece of text.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// `METHOD /path` pairs in one heading, table cell or paragraph start. A bare method span
/// (`` `PUT` / `DELETE /x` ``) takes the path of the next span that has one.
fn routes_in(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    for span in code_spans(text) {
        let mut words = span.split_whitespace();
        let (Some(first), second) = (words.next(), words.next()) else {
            continue;
        };
        if !METHODS.contains(&first) {
            continue;
        }
        match second {
            Some(path) if path.starts_with('/') => {
                let path = normalise(path);
                for m in pending.drain(..) {
                    out.push((m, path.clone()));
                }
                out.push((first.to_owned(), path));
            }
            None => pending.push(first.to_owned()),
            Some(_) => {}
        }
    }
    out
}

fn documented() -> BTreeSet<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
        .unwrap_or_else(|e| panic!("reading docs/api.md: {e}"));
    let mut routes = BTreeSet::new();
    let mut in_fence = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let place = if line.starts_with('#') {
            line
        } else if let Some(row) = line.strip_prefix('|') {
            row.split('|').next().unwrap_or("")
        } else if line.starts_with('`') && line.contains("` —") {
            line.split(" —").next().unwrap_or("")
        } else {
            continue;
        };
        routes.extend(routes_in(place));
    }
    routes
}

fn described() -> BTreeSet<(String, String)> {
    let json = web::openapi::json();
    if let Ok(path) = std::env::var("OPENAPI_DUMP") {
        std::fs::write(&path, json).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
    let v: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("description is not JSON: {e}"));
    let paths = v["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("no paths in the description"));
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        let item = item
            .as_object()
            .unwrap_or_else(|| panic!("{path} is not an object"));
        for method in item.keys() {
            let upper = method.to_ascii_uppercase();
            if METHODS.contains(&upper.as_str()) {
                ops.insert((upper, normalise(path)));
            }
        }
    }
    ops
}

#[test]
fn every_documented_route_is_described_and_the_reverse() {
    let doc = documented();
    let desc = described();
    assert!(
        doc.len() > 40,
        "parsed too few routes from docs/api.md: {doc:?}"
    );
    let undescribed: Vec<_> = doc.difference(&desc).collect();
    let undocumented: Vec<_> = desc.difference(&doc).collect();
    assert!(
        undescribed.is_empty() && undocumented.is_empty(),
        "in docs/api.md but not in the OpenAPI description: {undescribed:?}\n\
         in the OpenAPI description but not in docs/api.md: {undocumented:?}"
    );
}

#[test]
fn the_parser_reads_every_form_the_document_uses() {
    assert_eq!(
        routes_in("| `PUT` / `DELETE /api/v1/c/{name}/m/{seq}/pin` | members |"),
        vec![
            ("PUT".to_owned(), "/api/v1/c/{}/m/{}/pin".to_owned()),
            ("DELETE".to_owned(), "/api/v1/c/{}/m/{}/pin".to_owned()),
        ]
    );
    assert_eq!(
        routes_in("`DELETE /api/v1/dns/records?name=wiki&type=A[&value=10.0.0.5]`"),
        vec![("DELETE".to_owned(), "/api/v1/dns/records".to_owned())]
    );
    assert_eq!(
        routes_in("### `POST /a/{id}/drain`, `DELETE /a/{id}/drain`").len(),
        2
    );
    assert!(routes_in("no `code` here, `GET` alone").is_empty());
}
