//! Service checks and events: kept per interval as they come (they are not aggregated as series).

use super::{Dropped, ShardState};
use crate::aggregate::key::{ExtendTags, TagSet};
use crate::model::{self as sink, CheckRun};
use crate::protocol::{Message, Tags};

impl ShardState {
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
