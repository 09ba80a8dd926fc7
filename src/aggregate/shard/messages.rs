//! What a shard keeps per interval as it comes, without aggregating it as series: service checks, events, and
//! counters and gauges with their own `|T` timestamp.

use super::{Dropped, ShardState, MAX_TIMESTAMPED};
use crate::aggregate::key::{ExtendTags, KeyView, TagSet};
use crate::model::{self as sink, CheckRun, Series, SeriesKind};
use crate::protocol::{Message, Metric, MetricKind, MetricValue, Tags};

impl ShardState {
    pub(super) fn add_timestamped(
        &mut self,
        m: &Metric<'_>,
        ts: i64,
        view: &KeyView<'_>,
        extend: &ExtendTags,
    ) -> Result<(), Dropped> {
        let (kind, values) = match (m.kind, m.value) {
            (MetricKind::Counter, MetricValue::Numbers(v)) => (SeriesKind::Counter, v),
            (MetricKind::Gauge, MetricValue::Numbers(v)) => (SeriesKind::Gauge, v),
            _ => return Err(Dropped::TimestampOnUnsupportedType),
        };
        if self.timestamped.len() >= MAX_TIMESTAMPED {
            return Err(Dropped::TooManyTimestamped);
        }
        // As in the agent's no-aggregation pipeline: the sample rate does not re-inflate timestamped counts.
        let value = match kind {
            SeriesKind::Counter | SeriesKind::SampleCount => values.iter().sum(),
            SeriesKind::Gauge => values.iter().last().unwrap_or(0.0),
        };
        let key = view.to_key(self.canon.build(view, extend), extend);
        self.timestamped.push(Series {
            name: key.name,
            suffix: Default::default(),
            tags: key.tags,
            value,
            kind,
            timestamp: ts,
        });
        Ok(())
    }

    /// Aggregates one parsed message.
    pub fn add_message(&mut self, msg: Message<'_>, extend: &ExtendTags, now: i64) -> Result<(), Dropped> {
        match msg {
            Message::Metric(m) => self.add_metric(&m, None, extend),
            Message::ServiceCheck(c) => {
                let tags = canonical_tags(c.tags, extend);
                let hostname = c.hostname.filter(|h| !h.is_empty()).or(tags.host()).map(str::to_string);
                let run = CheckRun {
                    name: c.name.to_string(),
                    status: c.status,
                    timestamp: c.timestamp.unwrap_or(now),
                    hostname,
                    tags: tags.clone(),
                    message: c.message.unwrap_or("").to_string(),
                };
                self.checks.insert((c.name.into(), tags), run);
                Ok(())
            }
            Message::Event(e) => {
                let tags = canonical_tags(e.tags, extend);
                let hostname = e.hostname.filter(|h| !h.is_empty()).or(tags.host()).map(str::to_string);
                self.events.push(sink::Event {
                    title: e.title().into_owned(),
                    text: e.text().into_owned(),
                    timestamp: e.timestamp.unwrap_or(now),
                    hostname,
                    priority: e.priority,
                    alert_type: e.alert_type,
                    aggregation_key: e.aggregation_key.map(str::to_string),
                    source_type: e.source_type.map(str::to_string),
                    tags,
                });
                Ok(())
            }
        }
    }
}

fn canonical_tags(tags: Tags<'_>, extend: &ExtendTags) -> TagSet {
    // Service checks and events: tags are not part of a series key, so no scratch space is kept for them.
    TagSet::from_tags(
        tags.iter()
            .filter(|t| !extend.tags().iter().any(|e| e.split(':').next() == t.split(':').next()))
            .chain(extend.tags().iter().map(|t| &**t)),
    )
}
