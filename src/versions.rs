//! What changes between RabbitMQ versions, as verify reports it: defects
//! fixed in a known version, series past their community support, and the
//! feature flags that 4.x always has on. The facts live in one small data
//! file, `broker_versions.yaml`, with their sources, so that a new defect is
//! one entry there. Pure: the version comes from the management API's overview.

use std::sync::OnceLock;

use serde::Deserialize;

use crate::cascade::Desired;
use crate::diff::{Finding, Severity};
use crate::topology::{ArgValue, QueueType};

/// `major.minor.patch`; anything after the patch number (`-rc.1`) is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(Version {
            major,
            minor,
            patch,
        })
    }

    pub fn series(self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// Whether this version belongs to `series`: `"3"` (every 3.x) or `"4.0"`.
    fn in_series(self, series: &str) -> bool {
        match series.split_once('.') {
            Some((major, minor)) => {
                major.parse() == Ok(self.major) && minor.parse() == Ok(self.minor)
            }
            None => series.parse() == Ok(self.major),
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    defects: Vec<Defect>,
    end_of_community_support: EndOfSupport,
    flags_always_on_from: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defect {
    id: String,
    source: String,
    summary: String,
    fixed_in: Vec<String>,
    affects: Affects,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Affects {
    AtLeastOnce,
    All,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndOfSupport {
    source: String,
    series: Vec<String>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_yaml::from_str(include_str!("broker_versions.yaml"))
            .expect("src/broker_versions.yaml is checked by a unit test")
    })
}

/// Whether `version` still has a defect fixed in `fixed_in` (one version per
/// series): it does unless its own series has a fix it is at or past, or its
/// series is newer than every series with a fix.
fn affected(version: Version, fixed_in: &[Version]) -> bool {
    let newest_fixed_series = fixed_in.iter().map(|f| f.series()).max();
    let fixed = fixed_in
        .iter()
        .any(|fix| fix.series() == version.series() && version >= *fix)
        || newest_fixed_series.is_some_and(|series| version.series() > series);
    !fixed
}

/// Whether the 3.x feature flags are always on in this version (4.0 and later).
pub fn flags_always_on(version: &str) -> bool {
    let from = Version::parse(&table().flags_always_on_from).expect("checked by a unit test");
    Version::parse(version).is_some_and(|v| v >= from)
}

/// Whether the cascade's level queues dead-letter at least once.
fn at_least_once(desired: &Desired) -> bool {
    desired.queue_type == QueueType::Quorum
        && desired.queues.iter().all(|q| {
            q.arguments.get("x-dead-letter-strategy")
                == Some(&ArgValue::Str("at-least-once".into()))
        })
}

/// Defects of this broker version that touch this cascade (warnings), and
/// a note when its series is past community support.
pub fn findings(desired: &Desired, version: &str) -> Vec<Finding> {
    let Some(parsed) = Version::parse(version) else {
        return Vec::new();
    };
    let table = table();
    let mut found = Vec::new();
    for defect in &table.defects {
        if defect.affects == Affects::AtLeastOnce && !at_least_once(desired) {
            continue;
        }
        let fixed_in: Vec<Version> = defect
            .fixed_in
            .iter()
            .filter_map(|f| Version::parse(f))
            .collect();
        if !affected(parsed, &fixed_in) {
            continue;
        }
        let fixes = defect.fixed_in.join(" / ");
        found.push(Finding {
            severity: Severity::Warning,
            entity: "broker".into(),
            kind: "broker_defect".into(),
            expected: Some(format!("{fixes} or newer")),
            actual: Some(version.to_string()),
            message: format!(
                "RabbitMQ {version}: {} ({}, fixed in {fixes}; {})",
                defect.summary, defect.id, defect.source
            ),
            level: None,
        });
    }
    let support = &table.end_of_community_support;
    if let Some(series) = support.series.iter().find(|s| parsed.in_series(s)) {
        let series = if series.contains('.') {
            series.clone()
        } else {
            format!("{series}.x")
        };
        found.push(Finding {
            severity: Severity::Info,
            entity: "broker".into(),
            kind: "end_of_community_support".into(),
            expected: Some("a supported release series".into()),
            actual: Some(version.to_string()),
            message: format!(
                "RabbitMQ {version}: community support for {series} has ended, so its defects \
                 stay unfixed ({})",
                support.source
            ),
            level: None,
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::desired as desired_from;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn the_data_file_parses_and_every_version_in_it_is_a_version() {
        let table = table();
        assert!(!table.defects.is_empty());
        for defect in &table.defects {
            assert!(!defect.fixed_in.is_empty(), "{}", defect.id);
            for fix in &defect.fixed_in {
                assert!(Version::parse(fix).is_some(), "{}: {fix}", defect.id);
            }
            assert!(defect.source.starts_with("https://"), "{}", defect.id);
        }
        assert!(Version::parse(&table.flags_always_on_from).is_some());
    }

    #[test]
    fn versions_parse_with_and_without_patch_and_suffix() {
        assert_eq!(
            v("3.10.8"),
            Version {
                major: 3,
                minor: 10,
                patch: 8
            }
        );
        assert_eq!(
            v("4.3"),
            Version {
                major: 4,
                minor: 3,
                patch: 0
            }
        );
        assert_eq!(v("4.3.0-rc.1"), v("4.3.0"));
        assert!(v("3.10.8") < v("3.11.0") && v("3.9.29") < v("3.10.0"));
        assert_eq!(Version::parse("x"), None);
    }

    #[test]
    fn a_fix_per_series_leaves_the_releases_between_them_affected() {
        let fixes = [v("4.2.7"), v("4.3.1")];
        for affected_version in ["3.10.8", "4.0.5", "4.2.6", "4.3.0"] {
            assert!(affected(v(affected_version), &fixes), "{affected_version}");
        }
        for fixed_version in ["4.2.7", "4.2.9", "4.3.1", "4.4.0", "5.0.0"] {
            assert!(!affected(v(fixed_version), &fixes), "{fixed_version}");
        }
    }

    #[test]
    fn an_old_broker_gets_each_defect_with_its_fix_and_a_support_note() {
        let found = findings(&desired_from(""), "4.0.5");
        let kinds: Vec<(&str, Severity)> = found
            .iter()
            .map(|f| (f.kind.as_str(), f.severity))
            .collect();
        assert_eq!(
            kinds,
            [
                ("broker_defect", Severity::Warning),
                ("broker_defect", Severity::Warning),
                ("broker_defect", Severity::Warning),
                ("end_of_community_support", Severity::Info),
            ]
        );
        assert!(
            found[1].message.contains("#16203, fixed in 4.2.7 / 4.3.1"),
            "{}",
            found[1].message
        );
        assert!(
            found[3].message.contains("4.0 has ended"),
            "{}",
            found[3].message
        );
        let on_3 = findings(&desired_from(""), "3.10.8");
        assert!(
            on_3[3].message.contains("3.x has ended"),
            "{}",
            on_3[3].message
        );
    }

    #[test]
    fn a_current_broker_gets_nothing_and_the_defects_need_at_least_once() {
        assert!(findings(&desired_from(""), "4.3.3").is_empty());
        let between = findings(&desired_from(""), "4.3.1");
        assert_eq!(between.len(), 1);
        assert!(between[0].message.contains("#16652"));
        let classic = desired_from("cascade:\n  queue_type: classic\n  queue_arguments: {}\n");
        assert_eq!(
            findings(&classic, "4.0.5").len(),
            1,
            "only the support note"
        );
    }

    #[test]
    fn feature_flags_are_always_on_from_4_0() {
        assert!(!flags_always_on("3.13.7"));
        assert!(flags_always_on("4.0.5"));
        assert!(flags_always_on("4.3.0"));
    }
}
