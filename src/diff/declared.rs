//! The endpoint exchanges and queues the topology declares, against the
//! broker: absent ones are missing (install declares them), present ones
//! that differ are conflicts (install never redeclares them). Pure.

use super::{compare_entities, exchange_differences, queue_property_differences, Structure};
use crate::cascade::{Arguments, Desired, EndpointQueue, Value};
use crate::observe::{Observed, ObservedQueue};

/// Fills `structure`'s endpoint entries, its matches and its conflicts.
pub(super) fn compare<'a>(
    desired: &'a Desired,
    observed: &Observed,
    structure: &mut Structure<'a>,
) {
    let before = structure.conflicts.len();
    structure.missing_endpoint_exchanges = compare_entities(
        &desired.endpoint_exchanges,
        |e| {
            observed
                .exchanges
                .get(&e.name)
                .map(|found| exchange_differences(e, found))
        },
        &mut structure.matching,
        &mut structure.conflicts,
    );
    structure.missing_endpoint_queues = compare_entities(
        &desired.endpoint_queues,
        |q| {
            observed.queues.get(&q.name).map(|found| {
                let flags = (q.durable, q.exclusive, q.auto_delete);
                let arguments = as_declared(q, found);
                queue_property_differences(&q.name, None, flags, &arguments, found)
            })
        },
        &mut structure.matching,
        &mut structure.conflicts,
    );
    for conflict in &mut structure.conflicts[before..] {
        conflict.remedy = super::conflict::endpoint_remedy(&conflict.entity);
    }
}

/// The arguments to compare `found` with: a classic queue declared without
/// `x-queue-type` (by an application on 3.x, say) is the classic queue the
/// topology states, so the stated type is not held against it.
fn as_declared(queue: &EndpointQueue, found: &ObservedQueue) -> Arguments {
    let mut arguments = queue.arguments.clone();
    let classic = Value::Str("classic".into());
    let untyped_classic = !found.arguments.contains_key("x-queue-type")
        && matches!(found.queue_type.as_str(), "classic" | "");
    if arguments.get("x-queue-type") == Some(&classic) && untyped_classic {
        arguments.remove("x-queue-type");
    }
    arguments
}

#[cfg(test)]
mod tests {
    use super::super::{structure, Severity};
    use crate::cascade::{Arguments, Value};
    use crate::observe::ObservedExchange;
    use crate::test_fixtures::{desired, installed, observed_queue};

    const SALES: &str =
        "endpoints:\n  - address: Sales\n    declare: {arguments: {x-delivery-limit: 5}}\n";

    fn sales_arguments() -> Arguments {
        Arguments::from([
            ("x-delivery-limit".into(), Value::Int(5)),
            ("x-queue-type".into(), Value::Str("quorum".into())),
        ])
    }

    #[test]
    fn an_absent_declared_queue_is_missing_not_dangling() {
        let d = desired(SALES);
        let s = structure(&d, &installed(&d));
        assert_eq!(s.missing_endpoint_queues.len(), 1);
        assert!(s.dangling_endpoints.is_empty());
        assert!(!s.is_complete());
        let findings = s.findings();
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].message, "queue Sales is missing");
        assert_eq!(findings[0].level, None);
    }

    #[test]
    fn a_declared_queue_as_stated_matches() {
        let d = desired(SALES);
        let mut o = installed(&d);
        o.queues
            .insert("Sales".into(), observed_queue("Sales", sales_arguments()));
        let s = structure(&d, &o);
        assert!(s.is_complete(), "{:?}", s.findings());
        assert_eq!(s.matching, 29 + 28 + 57 + 1);
    }

    #[test]
    fn a_declared_queue_with_other_arguments_is_one_conflict_with_an_endpoints_remedy() {
        let d = desired(SALES);
        let mut o = installed(&d);
        let mut arguments = sales_arguments();
        arguments.insert("x-delivery-limit".into(), Value::Int(20));
        arguments.insert("x-max-length".into(), Value::Int(10));
        o.queues
            .insert("Sales".into(), observed_queue("Sales", arguments));
        let s = structure(&d, &o);
        assert_eq!(s.conflicts.len(), 1);
        let messages: Vec<_> = (s.conflicts[0].differences.iter())
            .map(|f| f.message.as_str())
            .collect();
        assert_eq!(
            messages,
            [
                "queue Sales: x-delivery-limit is 20, expected 5",
                "queue Sales: x-max-length is 10, expected (absent)",
            ]
        );
        let finding = s.conflicts[0].finding();
        assert!(finding.severity == Severity::Error && finding.level.is_none());
        assert!(s.conflicts[0].remedy.contains("teardown never deletes"));
    }

    #[test]
    fn an_untyped_classic_queue_is_the_declared_classic_queue() {
        let d = desired("endpoints:\n  - address: Sales\n    declare: {queue_type: classic}\n");
        let mut o = installed(&d);
        let mut found = observed_queue("Sales", Arguments::new());
        found.queue_type = "classic".into();
        o.queues.insert("Sales".into(), found.clone());
        assert!(structure(&d, &o).is_complete());
        // A quorum queue is not.
        found.queue_type = "quorum".into();
        found.arguments = Arguments::from([("x-queue-type".into(), Value::Str("quorum".into()))]);
        o.queues.insert("Sales".into(), found);
        let s = structure(&d, &o);
        assert_eq!(
            s.conflicts[0].message(),
            "queue Sales: x-queue-type is \"quorum\", expected \"classic\""
        );
    }

    #[test]
    fn a_declared_fanout_exchange_of_another_type_is_a_conflict() {
        let d =
            desired("endpoints:\n  - address: Sales\n    bind_to: exchange\n    declare: true\n");
        let mut o = installed(&d);
        o.exchanges.insert(
            "Sales".into(),
            ObservedExchange {
                name: "Sales".into(),
                kind: "direct".into(),
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: Arguments::new(),
            },
        );
        let s = structure(&d, &o);
        assert_eq!(
            s.conflicts[0].message(),
            "exchange Sales: type is direct, expected fanout"
        );
        assert_eq!(s.missing_endpoint_queues.len(), 1);
        assert!(s.missing_endpoint_exchanges.is_empty());
    }
}
