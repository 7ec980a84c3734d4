//! Runs a per-vhost command over every target at once, at most
//! `--concurrency` at a time, and folds the results into one outcome:
//! a single vhost prints as itself, several print one section each plus a
//! summary, and JSON carries a `vhosts` array. Human text writes binding
//! keys short (`*.{27}1.#`); JSON keeps them whole.

use std::future::Future;

use anyhow::Result;
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

use crate::cascade::Desired;
use crate::context::Context;
use crate::exit;
use crate::failover;
use crate::report::{short_binding_keys, Outcome};
use crate::target::Target;

/// What a command found or did in one vhost.
#[derive(Debug)]
pub struct VhostOutcome {
    pub ok: bool,
    pub text: String,
    pub json: Value,
}

pub async fn each_target<F, Fut>(context: &Context, run: F) -> Result<Outcome>
where
    F: Fn(Target, Desired) -> Fut,
    Fut: Future<Output = Result<VhostOutcome>>,
{
    if let [(target, desired)] = context.targets.as_slice() {
        let target = failover::reachable(target.clone()).await?;
        let result = run(target.clone(), desired.clone()).await?;
        let mut json = result.json;
        if let Value::Object(map) = &mut json {
            map.insert("vhost".into(), Value::String(target.vhost.clone()));
        }
        let text = short_binding_keys(&result.text);
        return Ok(Outcome::new(result.ok, text, json));
    }

    let results: Vec<(String, Result<VhostOutcome>)> = stream::iter(context.targets.iter())
        .map(|(target, desired)| {
            let vhost = target.vhost.clone();
            let run = &run;
            async move {
                let outcome = match failover::reachable(target.clone()).await {
                    Ok(target) => run(target, desired.clone()).await,
                    Err(error) => Err(error),
                };
                (vhost, outcome)
            }
        })
        .buffered(context.concurrency)
        .collect()
        .await;

    let mut text = String::new();
    let mut vhosts = Vec::new();
    let (mut ok_count, mut failed, mut worst_code) = (0, 0, exit::OK);
    for (vhost, result) in results {
        text.push_str(&format!("== vhost {vhost}\n"));
        match result {
            Ok(outcome) => {
                if outcome.ok {
                    ok_count += 1;
                } else {
                    worst_code = worst_code.max(exit::NOT_OK);
                }
                text.push_str(&short_binding_keys(&outcome.text));
                let mut entry = json!({ "vhost": vhost, "ok": outcome.ok });
                if let (Value::Object(entry), Value::Object(fields)) = (&mut entry, outcome.json) {
                    entry.extend(
                        fields
                            .into_iter()
                            .filter(|(k, _)| k != "ok" && k != "vhost"),
                    );
                }
                vhosts.push(entry);
            }
            Err(error) => {
                failed += 1;
                let code = exit::code_for(&error);
                worst_code = worst_code.max(code);
                let message = format!("{error:#}");
                text.push_str(&format!("error: {message}\n"));
                vhosts.push(
                    json!({ "vhost": vhost, "ok": false, "error": message, "exit_code": code }),
                );
            }
        }
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    let total = context.targets.len();
    text.push_str(&format!(
        "{total} vhosts: {ok_count} ok, {} not ok, {failed} failed\n",
        total - ok_count - failed
    ));
    let mut outcome = Outcome::new(worst_code == exit::OK, text, json!({ "vhosts": vhosts }));
    outcome.code = Some(worst_code);
    Ok(outcome)
}
