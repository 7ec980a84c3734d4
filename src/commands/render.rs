//! `render`: the desired state as a RabbitMQ definitions document, importable
//! with `rabbitmqctl import_definitions` or POST /api/definitions/{vhost}.

use serde_json::{json, Value};

use crate::cascade::Desired;
use crate::context::Context;
use crate::report::Outcome;

pub fn run(context: &Context) -> anyhow::Result<Outcome> {
    let desired: Vec<&Desired> = context.targets.iter().map(|(_, d)| d).collect();
    let document = definitions(&desired);
    let text = serde_json::to_string_pretty(&document)?;
    Ok(Outcome::new(true, text, json!({ "definitions": document })))
}

/// One definitions document holding the cascade of every given vhost.
pub fn definitions(desired: &[&Desired]) -> Value {
    let mut exchanges = Vec::new();
    let mut queues = Vec::new();
    let mut bindings = Vec::new();
    for d in desired {
        for e in d.exchanges.iter().chain(&d.endpoint_exchanges) {
            exchanges.push(json!({
                "name": e.name, "vhost": d.vhost, "type": e.kind, "durable": e.durable,
                "auto_delete": e.auto_delete, "internal": e.internal, "arguments": e.arguments,
            }));
        }
        let endpoint_queues = d.endpoint_queues.iter();
        let all_queues = d
            .queues
            .iter()
            .map(|q| (&q.name, q.durable, q.auto_delete, &q.arguments));
        for (name, durable, auto_delete, arguments) in all_queues
            .chain(endpoint_queues.map(|q| (&q.name, q.durable, q.auto_delete, &q.arguments)))
        {
            queues.push(json!({
                "name": name, "vhost": d.vhost, "durable": durable,
                "auto_delete": auto_delete, "arguments": arguments,
            }));
        }
        for b in &d.bindings {
            bindings.push(json!({
                "source": b.source, "vhost": d.vhost, "destination": b.destination,
                "destination_type": b.destination_type.as_str(), "routing_key": b.routing_key,
                "arguments": {},
            }));
        }
    }
    json!({ "exchanges": exchanges, "queues": queues, "bindings": bindings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;
    use std::path::Path;

    #[test]
    fn definitions_carry_every_entity_with_integer_ttls() {
        let topology = Topology::parse(Path::new("t.yaml"), "").unwrap();
        let d = Desired::new(&topology, "v");
        let doc = definitions(&[&d]);
        assert_eq!(doc["exchanges"].as_array().unwrap().len(), 29);
        assert_eq!(doc["queues"].as_array().unwrap().len(), 28);
        assert_eq!(doc["bindings"].as_array().unwrap().len(), 56);
        assert_eq!(
            doc["queues"][0]["arguments"]["x-message-ttl"],
            json!(134_217_728_000i64)
        );
        assert_eq!(doc["queues"][0]["vhost"], json!("v"));
    }

    #[test]
    fn declared_endpoints_are_in_the_definitions() {
        let text = "endpoints:\n  - address: Sales\n    bind_to: exchange\n    declare: true\n";
        let topology = Topology::parse(Path::new("t.yaml"), text).unwrap();
        let d = Desired::new(&topology, "v");
        let doc = definitions(&[&d]);
        assert_eq!(doc["exchanges"][29]["name"], json!("Sales"));
        assert_eq!(doc["exchanges"][29]["type"], json!("fanout"));
        assert_eq!(
            doc["queues"][28],
            json!({"name": "Sales", "vhost": "v", "durable": true, "auto_delete": false,
                   "arguments": {"x-queue-type": "quorum"}})
        );
        let bindings = doc["bindings"].as_array().unwrap();
        assert_eq!(bindings.len(), 58);
        assert_eq!(bindings[57]["source"], json!("Sales"));
        assert_eq!(bindings[57]["routing_key"], json!(""));
    }
}
