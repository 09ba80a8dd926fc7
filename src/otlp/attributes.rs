//! OTLP attributes as DogStatsD tags, by one rule for every transport:
//! - a data point's attributes become `key:value` tags;
//! - of the resource's attributes, `host.name` becomes `host:<value>`, `service.name` `service:<value>`,
//!   `service.version` `version:<value>` and `deployment.environment.name` (or the older
//!   `deployment.environment`) `env:<value>`, the tags Datadog's OTLP ingest gives them; the others are left out
//!   (an SDK's resource carries `telemetry.sdk.*` and often a per-process `service.instance.id`, which would make
//!   every process a new series) unless `otlp_resource_attributes_as_tags` is set, which adds each as `key:value`;
//! - the instrumentation scope (its name, version and attributes) is left out;
//! - values: strings as they are, booleans as `true`/`false`, integers and doubles in decimal; arrays, maps and
//!   bytes are left out (DogStatsD has no tag for them). A `,` (which would split the tag) becomes `_`. A
//!   non-empty key with an empty value gives `key:`.

use super::proto::common::v1::{any_value::Value as Any, KeyValue};

/// Resource attributes that always become tags, and the tag key each becomes.
const MAPPED: &[(&str, &str)] = &[
    ("host.name", "host"),
    ("service.name", "service"),
    ("service.version", "version"),
    ("deployment.environment.name", "env"),
    ("deployment.environment", "env"),
];

/// An attribute's value as tag text; `None` for the kinds left out.
pub fn value_text(value: &Option<super::proto::common::v1::AnyValue>) -> Option<String> {
    let text = match value.as_ref()?.value.as_ref()? {
        Any::StringValue(s) => s.clone(),
        Any::BoolValue(b) => b.to_string(),
        Any::IntValue(i) => i.to_string(),
        Any::DoubleValue(d) if d.is_finite() => d.to_string(),
        Any::DoubleValue(_) | Any::ArrayValue(_) | Any::KvlistValue(_) | Any::BytesValue(_) => return None,
    };
    Some(text)
}

/// `key:value`, with `,` replaced; `None` for an empty key or a value left out.
fn tag(key: &str, value: &Option<super::proto::common::v1::AnyValue>) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let value = value_text(value)?;
    Some(format!("{key}:{value}").replace(',', "_"))
}

/// The tags a data point's own attributes give.
pub fn point_tags(attributes: &[KeyValue], out: &mut Vec<String>) {
    out.extend(attributes.iter().filter_map(|kv| tag(&kv.key, &kv.value)));
}

/// The tags a resource's attributes give (see the module documentation).
pub fn resource_tags(attributes: &[KeyValue], all: bool) -> Vec<String> {
    let mut out = Vec::new();
    let environment_name = attributes.iter().any(|kv| kv.key == "deployment.environment.name");
    for kv in attributes {
        match MAPPED.iter().find(|(k, _)| *k == kv.key) {
            // The newer key wins over the older one.
            Some((k, _)) if *k == "deployment.environment" && environment_name => {}
            Some((_, to)) => out.extend(tag(to, &kv.value)),
            None if all => out.extend(tag(&kv.key, &kv.value)),
            None => {}
        }
    }
    out
}

/// Every attribute as text, sorted, for the identity of a stream (cumulative sums and histograms): the resource's
/// attributes that are left out of the tags still tell two processes' streams apart.
pub fn identity(attributes: &[KeyValue], out: &mut Vec<u8>) {
    let mut pairs: Vec<(&str, String)> = attributes
        .iter()
        .map(|kv| (kv.key.as_str(), format!("{:?}", kv.value)))
        .collect();
    pairs.sort();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::proto::common::v1::AnyValue;

    fn kv(key: &str, value: Any) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Some(AnyValue { value: Some(value) }),
        }
    }

    #[test]
    fn point_attributes_become_key_value_tags_and_commas_cannot_split_them() {
        let mut tags = Vec::new();
        point_tags(
            &[
                kv("route", Any::StringValue("/charges,refunds".into())),
                kv("ok", Any::BoolValue(true)),
                kv("code", Any::IntValue(200)),
                kv("ratio", Any::DoubleValue(0.5)),
                kv("raw", Any::BytesValue(vec![1, 2])),
                kv("", Any::StringValue("x".into())),
                kv("empty", Any::StringValue(String::new())),
            ],
            &mut tags,
        );
        assert_eq!(
            tags,
            ["route:/charges_refunds", "ok:true", "code:200", "ratio:0.5", "empty:"]
        );
    }

    #[test]
    fn only_the_mapped_resource_attributes_become_tags_unless_all_are_asked_for() {
        let attrs = [
            kv("host.name", Any::StringValue("web-1".into())),
            kv("service.name", Any::StringValue("api".into())),
            kv("deployment.environment", Any::StringValue("old".into())),
            kv("deployment.environment.name", Any::StringValue("prod".into())),
            kv("telemetry.sdk.language", Any::StringValue("python".into())),
        ];
        assert_eq!(resource_tags(&attrs, false), ["host:web-1", "service:api", "env:prod"]);
        assert_eq!(
            resource_tags(&attrs, true),
            ["host:web-1", "service:api", "env:prod", "telemetry.sdk.language:python"]
        );
    }
}
