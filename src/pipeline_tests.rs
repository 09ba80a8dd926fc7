//! Tests of [`super`]: routing lines to shards, hand-over and flushes.

use super::*;

fn sender() -> (ShardSender, mpsc::UnboundedReceiver<ShardMsg>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sender = ShardSender {
        tx,
        raw_queued: Arc::default(),
        handover_bytes: Arc::default(),
        waker: Arc::new(Waker::new().unwrap()),
    };
    (sender, rx)
}

#[test]
fn hand_overs_to_a_worker_that_is_behind_are_refused_past_the_byte_bound_and_accepted_again_once_it_catches_up() {
    let (to, mut inbox) = sender();
    let chunk = HANDOVER_MAX_BYTES / 4;
    for _ in 0..4 {
        assert!(to.send_lines(vec![b'x'; chunk]).is_ok());
    }
    // The bound is reached: one more byte comes back, whole, to be counted and dropped.
    let refused = to.send_lines(b"a:1|c\n".to_vec()).unwrap_err();
    assert_eq!(refused, b"a:1|c\n");
    assert_eq!(to.handover_bytes.load(Ordering::Acquire), HANDOVER_MAX_BYTES);
    // The worker processes one buffer (as `Worker::handle` does): there is room again.
    let Ok(ShardMsg::Lines(buf)) = inbox.try_recv() else {
        panic!("the first hand-over is queued")
    };
    to.handover_bytes.fetch_sub(buf.len(), Ordering::AcqRel);
    assert!(to.send_lines(b"a:1|c\n".to_vec()).is_ok());
    assert_eq!(to.handover_bytes.load(Ordering::Acquire), 3 * chunk + 6);
}
