use super::*;
use crate::test_fixtures::desired as desired_with;

fn extra() -> Extra<'static> {
    Extra {
        migrate_source: None,
        poison_queue: "delaytopo.poison",
    }
}

fn grant(command: &str, yaml: &str) -> Grant {
    let desired = desired_with(yaml);
    needs(command, &desired, &extra()).unwrap().grant(command)
}

#[test]
fn install_configures_the_cascade_and_writes_to_each_endpoint() {
    let g = grant(
        "install",
        "cascade: {levels: 2}\nendpoints: [{address: Sales}, {address: Billing, bind_to: exchange}]",
    );
    let names = r"nsb\.v2\.delay-delivery|nsb\.v2\.delay-level-(0[0-1])";
    assert_eq!(g.configure, format!("^({names})$"));
    assert_eq!(g.write, format!("^(Billing|Sales|{names})$"));
    // Sources of bindings: the level exchanges and the delivery exchange.
    assert_eq!(g.read, format!("^({names})$"));
    assert_eq!(g.tags, vec!["management"]);
}

#[test]
fn install_configures_declared_endpoints_and_teardown_does_not() {
    let yaml = "cascade: {levels: 1}\nendpoints: [{address: Sales, bind_to: exchange, \
                declare: true}, {address: Billing}]";
    let names = r"nsb\.v2\.delay-delivery|nsb\.v2\.delay-level-00";
    assert_eq!(
        grant("install", yaml).configure,
        format!("^(Sales|{names})$")
    );
    // teardown deletes the staging queues moves leave, and takes their lock.
    let staging = r"delaytopo\.staging\.nsb\.v2\.delay-delivery\.([0-7]|lock)";
    let teardown = grant("teardown", yaml).configure;
    assert!(
        teardown.contains(names) && !teardown.contains("Sales"),
        "{teardown}"
    );
    let matches = |name: &str| regex::Regex::new(&teardown).unwrap().is_match(name);
    assert!(
        matches("delaytopo.staging.nsb.v2.delay-delivery.7"),
        "{teardown} ({staging})"
    );
    assert!(matches("delaytopo.staging.nsb.v2.delay-delivery.lock"));
    assert!(!matches("delaytopo.staging.nsb.v2.delay-delivery.8"));
    // The fanout exchange is the source of its binding to the queue.
    assert_eq!(grant("install", yaml).read, format!("^(Sales|{names})$"));
}

#[test]
fn consecutive_level_numbers_become_digit_ranges_that_match_exactly_them() {
    assert_eq!(numbers_regex(&["00", "01", "02"]), "0[0-2]");
    assert_eq!(numbers_regex(&["1", "3"]), "1|3");
    for (low, high) in [(0, 27), (0, 9), (5, 5), (3, 17), (0, 99), (7, 20)] {
        let numbers: Vec<String> = (low..=high).map(|n| format!("{n:02}")).collect();
        let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
        let pattern = format!("^({})$", numbers_regex(&refs));
        let regex = regex::Regex::new(&pattern).unwrap();
        for n in 0..100 {
            let text = format!("{n:02}");
            assert_eq!(
                regex.is_match(&text),
                (low..=high).contains(&n),
                "{text} {pattern}"
            );
        }
    }
    assert_eq!(
        numbers_regex(&[
            "00", "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13",
            "14", "15", "16", "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27"
        ]),
        "[0-1][0-9]|2[0-7]"
    );
}

#[test]
fn every_name_and_only_these_match() {
    let desired = desired_with("endpoints: [{address: 'a.b'}, {address: 'q1'}, {address: 'q'}]");
    let g = needs("install", &desired, &extra())
        .unwrap()
        .grant("install");
    let write = regex::Regex::new(&g.write).unwrap();
    for name in [
        "a.b",
        "q1",
        "q",
        "nsb.v2.delay-level-00",
        "nsb.v2.delay-level-27",
    ] {
        assert!(write.is_match(name), "{name} in {}", g.write);
    }
    for name in ["axb", "q2", "nsb.v2.delay-level-28", "nsb.v2.delay-level-0"] {
        assert!(!write.is_match(name), "{name} in {}", g.write);
    }
}

#[test]
fn what_a_users_permissions_do_not_cover_is_named() {
    let desired = desired_with("cascade: {levels: 1}\nendpoints: [{address: Sales}]");
    let needs = needs("install", &desired, &extra()).unwrap();
    assert_eq!(needs.not_covered(".*", ".*", ".*"), Some(vec![]));
    assert_eq!(
        needs.not_covered(".*", "^nsb\\..*", ".*"),
        Some(vec!["`write` on Sales".to_string()])
    );
    assert_eq!(needs.not_covered("(?<=x)", ".*", ".*"), None);
}

#[test]
fn verify_and_plan_need_only_the_management_tag() {
    for command in ["verify", "plan"] {
        let g = grant(command, "");
        assert_eq!(
            (g.configure.as_str(), g.write.as_str(), g.read.as_str()),
            ("^$", "^$", "^$")
        );
        assert_eq!(g.tags, vec!["management"]);
        assert!(g.notes[0].contains("administrator"));
    }
}

#[test]
fn the_probe_owns_only_its_own_queues() {
    let g = grant("probe", "cascade: {levels: 1}");
    assert_eq!(
        g.configure,
        format!(r"^(delaytopo\.probe\.sink|{PROBE_QUEUES})$")
    );
    assert!(regex::Regex::new(&g.configure)
        .unwrap()
        .is_match("delaytopo.probe.0123456789abcdef"));
    assert!(!regex::Regex::new(&g.configure)
        .unwrap()
        .is_match("nsb.v2.delay-level-00"));
    assert!(g.read.contains(r"nsb\.v2\.delay-delivery"));
}

#[test]
fn migrate_reads_the_source_and_fills_the_poison_queue() {
    let target = desired_with("cascade: {levels: 1}");
    let source = desired_with("cascade: {levels: 1, level_name: 'nsb.delay-level-{level:02}'}");
    let extra = Extra {
        migrate_source: Some(&source),
        poison_queue: "poison",
    };
    let g = needs("migrate", &target, &extra).unwrap().grant("migrate");
    let read = regex::Regex::new(&g.read).unwrap();
    assert!(read.is_match("nsb.delay-level-00"));
    assert!(!read.is_match("nsb.delay-level-01"));
    let configure = regex::Regex::new(&g.configure).unwrap();
    assert!(configure.is_match("poison") && !configure.is_match("nsb.delay-level-00"));
    assert!(regex::Regex::new(&g.write).unwrap().is_match("amq.default"));
}

#[test]
fn all_merges_every_command_and_unknown_ones_are_refused() {
    let desired = desired_with("");
    let grants = grants(&[], &desired, &extra()).unwrap();
    assert_eq!(grants.len(), COMMANDS.len() + 1);
    let all = grants.last().unwrap();
    assert_eq!(all.command, "all");
    assert!(all.configure.contains(PROBE_QUEUES) && all.configure.contains("poison"));
    let err = super::grants(&["render".to_string()], &desired, &extra()).unwrap_err();
    assert!(err.contains("render"), "{err}");
}
