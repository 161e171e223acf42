//! Refunds of the pool's rate limiter against real Redis (standalone and cluster): what an
//! estimate took beyond the real usage goes back, never past a bucket's capacity.

#[macro_use]
mod coord_common;

use std::time::Duration;

use coord_common::Fixture;
use maos_core::coord::ratelimit::{Admission, Bucket, RateLimits};

fn output_only(per_minute: u64) -> RateLimits {
    RateLimits {
        requests: Bucket::unlimited(),
        input_tokens: Bucket::unlimited(),
        output_tokens: Bucket::per_minute(per_minute),
    }
}

async fn a_refund_makes_room_for_the_next_call(fx: &Fixture) {
    let limiter = fx.pool().rate_limiter(output_only(1_000));
    assert_eq!(
        limiter.acquire(1, 0, 1_000).await.expect("acquire"),
        Admission::Go
    );
    assert!(matches!(
        limiter.acquire(1, 0, 500).await.expect("acquire"),
        Admission::Wait(_)
    ));
    // The call produced 100 output tokens of the 1000 estimated.
    limiter.refund(0, 900).await.expect("refund");
    assert_eq!(
        limiter.acquire(1, 0, 500).await.expect("acquire"),
        Admission::Go
    );
}

async fn a_refund_never_fills_a_bucket_past_its_capacity(fx: &Fixture) {
    let limiter = fx.pool().rate_limiter(output_only(1_000));
    assert_eq!(
        limiter.acquire(1, 0, 10).await.expect("acquire"),
        Admission::Go
    );
    limiter.refund(0, 1_000_000).await.expect("refund");
    assert_eq!(
        limiter.acquire(1, 0, 1_000).await.expect("acquire"),
        Admission::Go
    );
    match limiter.acquire(1, 0, 100).await.expect("acquire") {
        // At 1000 a minute, 100 tokens take about 6 s to come back.
        Admission::Wait(wait) => assert!(wait > Duration::from_secs(1), "{wait:?}"),
        Admission::Go => panic!("the refund overfilled the bucket"),
    }
}

both_backends!(
    a_refund_makes_room_for_the_next_call,
    a_refund_never_fills_a_bucket_past_its_capacity,
);
