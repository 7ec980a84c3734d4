use super::*;

#[test]
fn a_fresh_install_and_a_conflict_fit_80_columns() {
    use crate::test_fixtures::{
        assert_fits_80_columns, desired, installed_with_hand_made_level_5, target,
    };
    let d = desired("");
    let plan = Plan::observed(&d, &Observed::default());
    let applied = Applied {
        done: plan
            .declarations
            .iter()
            .chain(&plan.bindings)
            .map(entity)
            .collect(),
        ..Applied::default()
    };
    let fresh = plan.report(&target(), applied);
    assert!(fresh
        .text
        .starts_with("declared 113:\n  + exchange nsb.v2.delay-level-27\n"));
    assert_fits_80_columns("install, fresh vhost", &fresh.text);

    let conflict = Plan::observed(&d, &installed_with_hand_made_level_5(&d))
        .report(&target(), Applied::default());
    assert!(!conflict.ok);
    assert!(
        conflict.text.contains(
            "conflict queue nsb.v2.delay-level-05 differs in 4 properties:\n  \
             x-dead-letter-exchange is (absent), expected \"nsb.v2.delay-level-04\"\n"
        ),
        "{}",
        conflict.text
    );
    assert!(
        conflict.text.contains("present, 1 conflict\n"),
        "{}",
        conflict.text
    );
    assert_eq!(
        conflict.json["conflicts"][0]["differences"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_fits_80_columns("install, a conflict", &conflict.text);
}
