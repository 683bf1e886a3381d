//! `type: webhook`: events POSTed to a URL, as a JSON array per request
//! (up to `max_batch_samples` events) or one event per request
//! (`one_event_per_request: true`). `body_template` (a Go template with
//! vmalert's functions, see [`super::template`]) renders each event instead
//! of the JSON event: in array mode every rendered event must be a JSON
//! value (it becomes an array element); with one event per request the
//! rendered text is the whole body (a Slack or Teams message, a SOAR
//! payload). Headers, auth and retries are the HTTP client's, as for the
//! other destinations.

use super::config::WebhookConfig;
use super::shape::{EventRef, EventShape};

/// Appends the item: the rendered template, or the event as JSON.
pub fn write_item(out: &mut Vec<u8>, cfg: &WebhookConfig, shape: &EventShape, ev: &EventRef<'_>) {
    match &cfg.body_template {
        None => shape.write_json(out, ev),
        Some(t) => match t.render(ev) {
            Ok(s) => out.extend_from_slice(s.as_bytes()),
            Err(e) => {
                tracing::warn!("webhook body_template: {e}; sending the event as JSON instead");
                shape.write_json(out, ev)
            }
        },
    }
}

/// One array body from several items.
pub fn array_body(items: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.push(b']');
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays() {
        assert_eq!(array_body(&[]), b"[]");
        assert_eq!(array_body(&[b"{}", b"1"]), b"[{},1]");
    }
}
