//! Before anything changes: does the user hold what the command needs?
//!
//! RabbitMQ shows a user its own permissions only if it is an administrator
//! (`/api/permissions/{vhost}/{user}`); for anyone else this check is
//! skipped and a refusal is named when the broker answers with it.

use anyhow::Result;
use serde::Deserialize;

use crate::cascade::Desired;
use crate::exit::broker;
use crate::mgmt::Management;
use crate::permissions::{needs, Extra};
use crate::report::first_few;
use crate::target::Target;

#[derive(Deserialize)]
struct Granted {
    configure: String,
    write: String,
    read: String,
}

/// Exit 3, naming each missing permission, when the AMQP user's permissions
/// on the vhost visibly do not cover `command`'s work.
pub async fn check(
    management: &Management,
    target: &Target,
    command: &str,
    desired: &Desired,
) -> Result<()> {
    let Some(user) = amqp_user(target) else {
        return Ok(());
    };
    let path = format!(
        "permissions/{}/{}",
        crate::target::encode_vhost(&target.vhost),
        crate::target::encode_vhost(&user)
    );
    let granted: Granted = match management.get_if_permitted(&path).await {
        Ok(Some(granted)) => granted,
        // Not an administrator, or no entry (404): the broker will say.
        Ok(None) | Err(_) => return Ok(()),
    };
    let extra = Extra {
        migrate_source: None,
        poison_queue: "",
    };
    let Some(needs) = needs(command, desired, &extra) else {
        return Ok(());
    };
    let missing = needs
        .not_covered(&granted.configure, &granted.write, &granted.read)
        .unwrap_or_default();
    if missing.is_empty() {
        return Ok(());
    }
    Err(broker(format!(
        "{command} would be refused: user `{user}` lacks {} in vhost `{}`; nothing was \
         changed (see `delaytopo permissions {command}`)",
        first_few(&missing, 4, ", "),
        target.vhost
    )))
}

/// The user AMQP logs in as, when the URL names it (not with EXTERNAL).
fn amqp_user(target: &Target) -> Option<String> {
    let external = target
        .amqp
        .query_pairs()
        .any(|(k, v)| k == "auth_mechanism" && v.eq_ignore_ascii_case("external"));
    let user = target.amqp.username();
    if external || user.is_empty() {
        return None;
    }
    percent_encoding::percent_decode_str(user)
        .decode_utf8()
        .ok()
        .map(|u| u.into_owned())
}
