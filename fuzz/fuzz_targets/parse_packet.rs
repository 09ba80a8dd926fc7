//! Any bytes, as one packet: parsing never panics, whatever parses can be read in full, and cutting a line at its
//! value (what a shard does for a line whose text it knows) agrees with the full parse.
#![no_main]

use harrier::protocol::{self, Message, MetricValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for result in protocol::parse_packet(data) {
        match result {
            Ok(Message::Metric(m)) => {
                if let MetricValue::Numbers(values) = m.value {
                    assert_eq!(values.iter().count(), values.len());
                    assert!(values.iter().all(f64::is_finite));
                }
                assert!(m.sample_rate > 0.0 && m.sample_rate <= 1.0);
                let _ = m.tags.iter().count();
                // What parses formats back into something that parses to the same metric.
                let again = m.to_string();
                match protocol::parse_line(again.as_bytes()) {
                    Ok(Message::Metric(m2)) => assert_eq!(m2.kind, m.kind),
                    other => panic!("{again:?} reparsed as {other:?}"),
                }
            }
            Ok(Message::Event(e)) => {
                let _ = (e.title(), e.text());
            }
            Ok(Message::ServiceCheck(c)) => {
                let _ = c.tags.iter().count();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    // The cut a shard uses for lines whose text it knows agrees with the full parse.
    for line in protocol::lines(data) {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let view = protocol::split_metric(line);
        if let Ok(Message::Metric(m)) = protocol::parse_str(line) {
            let view = view.expect("a metric line has a name:value| prefix");
            assert_eq!((view.name, view.suffix), (m.name, m.suffix));
            assert_eq!(protocol::parse_value(m.kind, view.value), Ok(m.value));
        }
    }
});
