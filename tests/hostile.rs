//! A global fed malformed forwarded batches by a hostile or broken peer: each bad batch is refused whole and
//! counted by reason, and the global goes on merging the good ones.

use std::time::Duration;

use crate::common::*;
use harrier::forward::proto::forward_client::ForwardClient;
use harrier::forward::proto::{metric, set, Centroid, Histogram, Metric, MetricBatch, MetricType, Scope, Set};

fn counter(name: &str, v: f64) -> Metric {
    Metric {
        name: name.into(),
        tags: vec!["peer:test".into()],
        r#type: MetricType::Counter as i32,
        scope: Scope::Global as i32,
        value: Some(metric::Value::Counter(v)),
    }
}

fn histogram(name: &str, centroids: Vec<(f64, f64)>, count: f64) -> Metric {
    Metric {
        name: name.into(),
        tags: vec![],
        r#type: MetricType::Timer as i32,
        scope: Scope::Mixed as i32,
        value: Some(metric::Value::Histogram(Histogram {
            centroids: centroids
                .into_iter()
                .map(|(mean, weight)| Centroid { mean, weight })
                .collect(),
            compression: 300,
            min: 1.0,
            max: 3.0,
            count,
            sum: 6.0,
            reciprocal_sum: 0.0,
            report_stats: false,
        })),
    }
}

fn set_registers(name: &str, precision: u32, registers: usize) -> Metric {
    Metric {
        name: name.into(),
        tags: vec![],
        r#type: MetricType::Set as i32,
        scope: Scope::Mixed as i32,
        value: Some(metric::Value::Set(Set {
            precision,
            sketch: Some(set::Sketch::Registers(vec![1; registers])),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_batches_are_refused_whole_and_counted_and_a_good_one_is_merged_after_them() {
    let config = config(
        &["udp://127.0.0.1:0"],
        "grpc_address: \"127.0.0.1:0\"\npercentiles: [0.5]\n",
    );
    let (global, sink) = start(&config).await;
    let grpc = global.grpc_address.unwrap();
    let mut client = ForwardClient::connect(format!("http://{grpc}")).await.unwrap();

    let bad_batches: Vec<(&str, Vec<Metric>)> = vec![
        // A count that the centroids' weights do not add up to.
        (
            "bad_digest",
            vec![histogram("absurd.count", vec![(1.0, 1.0), (3.0, 1.0)], 1e300)],
        ),
        ("bad_digest", vec![histogram("nan.mean", vec![(f64::NAN, 1.0)], 1.0)]),
        (
            "bad_digest",
            vec![histogram("inf.weight", vec![(1.0, f64::INFINITY)], f64::INFINITY)],
        ),
        (
            "bad_digest",
            vec![histogram("negative.weight", vec![(1.0, -1.0)], -1.0)],
        ),
        ("bad_set", vec![set_registers("short.registers", 14, 100)]),
        ("bad_set", vec![set_registers("other.precision", 12, 4096)]),
        ("too_long", vec![counter(&"n".repeat(9000), 1.0)]),
        ("non_finite", vec![counter("nan.counter", f64::NAN)]),
        // Good metrics beside one bad one: none of them is merged.
        (
            "non_finite",
            vec![
                counter("mixed.good", 5.0),
                counter("mixed.bad", f64::INFINITY),
                counter("mixed.good.after", 5.0),
            ],
        ),
    ];
    for (i, (_, metrics)) in bad_batches.iter().enumerate() {
        let mut req = tonic::Request::new(tokio_stream::iter(vec![MetricBatch {
            metrics: metrics.clone(),
        }]));
        req.metadata_mut().insert(
            "harrier-batch-id",
            format!("00000000000000aa-{}", i + 1).parse().unwrap(),
        );
        let answer = client.send_metric_batches(req).await.expect("answered").into_inner();
        assert_eq!(answer.accepted, 0, "batch {i} partly accepted");
        assert_eq!(answer.rejected, metrics.len() as u64, "batch {i}");
    }
    // Then a good batch from the same peer.
    let good = vec![
        counter("good.requests", 7.0),
        histogram("good.latency", vec![(1.0, 1.0), (2.0, 1.0), (3.0, 1.0)], 3.0),
        set_registers("good.users", 14, 16384),
    ];
    let mut req = tonic::Request::new(tokio_stream::iter(vec![MetricBatch { metrics: good }]));
    req.metadata_mut()
        .insert("harrier-batch-id", "00000000000000aa-100".parse().unwrap());
    let answer = client.send_metric_batches(req).await.unwrap().into_inner();
    assert_eq!((answer.accepted, answer.rejected), (3, 0));
    assert!(
        eventually(Duration::from_secs(5), || global
            .telemetry
            .peek("harrier.import.metrics", "")
            == 3)
        .await,
        "the good batch is merged"
    );
    global.shutdown().await;

    let values = sink.values();
    assert_eq!(values["good.requests#peer:test"], 7.0, "{values:?}");
    assert_eq!(values["good.latency.50percentile"], 2.0, "{values:?}");
    assert!(values.contains_key("good.users"), "{values:?}");
    for name in [
        "mixed.good#peer:test",
        "mixed.good.after#peer:test",
        "absurd.count.50percentile",
    ] {
        assert!(
            !values.contains_key(name),
            "{name} from a refused batch was merged: {values:?}"
        );
    }
    for reason in ["bad_digest", "bad_set", "too_long", "non_finite"] {
        let batches = bad_batches.iter().filter(|(r, _)| *r == reason).count() as f64;
        assert_eq!(
            sink.self_metric("harrier.import.batches_refused", &format!("reason:{reason}")),
            batches,
            "batches refused for {reason}"
        );
        assert!(sink.self_metric("harrier.import.errors", &format!("reason:{reason}")) >= batches);
    }
}
