//! Tests that need something a machine may lack (a browser, Docker, Wine, promtool, the previous
//! release): without it they skip and say why, unless the environment requires it
//! (`CHAOS_REQUIRE_<THING>=1`, which `.ci/run` sets), when the same reason fails the test. One
//! rule for all of them, so a CI machine that lost a tool fails loudly instead of going green
//! on skipped tests.

/// Whether `var` requires the capability: set to anything but empty or `0`.
pub fn is_required(var: &str) -> bool {
    requires(std::env::var(var).ok().as_deref())
}

fn requires(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// `test` cannot run because of `why`: panics when any of `vars` requires it, otherwise prints
/// a SKIP line (naming the variable that would make it a failure) and returns.
#[track_caller]
pub fn skip(test: &str, vars: &[&str], why: &str) {
    match verdict(test, vars, why, |v| std::env::var(v).ok()) {
        Err(failure) => panic!("{failure}"),
        Ok(line) => eprintln!("{line}"),
    }
}

/// The SKIP line, or the failure when a variable requires the test.
fn verdict(
    test: &str,
    vars: &[&str],
    why: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    if let Some(var) = vars.iter().find(|v| requires(env(v).as_deref())) {
        return Err(format!("{test}: {var}=1 but {why}"));
    }
    Ok(format!(
        "SKIP {test}: {why} (with {}=1 the test fails instead)",
        vars.join("=1 or ")
    ))
}

#[cfg(test)]
mod tests {
    use super::verdict;

    #[test]
    fn only_a_set_non_zero_variable_makes_a_skip_a_failure() {
        let vars = ["CHAOS_REQUIRE_A", "CHAOS_REQUIRE_B"];
        let env = |set: &'static [(&'static str, &'static str)]| {
            move |v: &str| {
                set.iter()
                    .find(|(k, _)| *k == v)
                    .map(|(_, x)| x.to_string())
            }
        };
        assert_eq!(
            verdict("t", &vars, "no tool", env(&[])),
            Ok("SKIP t: no tool (with CHAOS_REQUIRE_A=1 or CHAOS_REQUIRE_B=1 the test fails instead)".into())
        );
        assert!(verdict("t", &vars, "no tool", env(&[("CHAOS_REQUIRE_A", "0")])).is_ok());
        assert!(verdict("t", &vars, "no tool", env(&[("CHAOS_REQUIRE_B", "")])).is_ok());
        assert_eq!(
            verdict("t", &vars, "no tool", env(&[("CHAOS_REQUIRE_B", "1")])),
            Err("t: CHAOS_REQUIRE_B=1 but no tool".into())
        );
    }
}
