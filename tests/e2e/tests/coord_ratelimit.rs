//! The pool rate limiter against real Redis (standalone and cluster): shared by concurrent
//! agents, never admitting more than burst + rate × time, all-or-nothing across buckets.

#[macro_use]
mod coord_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coord_common::Fixture;
use maos_core::coord::CoordError;
use maos_core::coord::ratelimit::{Admission, Bucket, RateLimits};

async fn concurrent_agents_never_exceed_rate_plus_burst(fx: &Fixture) {
    let pool = fx.pool();
    let limits = RateLimits {
        requests: Bucket {
            per_minute: 600,
            burst: 5,
        },
        input_tokens: Bucket::unlimited(),
        output_tokens: Bucket::unlimited(),
    };
    let admitted = Arc::new(AtomicU64::new(0));
    let waits = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_millis(1500);
    let start = Instant::now();
    let mut agents = Vec::new();
    for _ in 0..8 {
        // Each agent has its own limiter handle, as separate pods would; the buckets are shared.
        let limiter = pool.rate_limiter(limits);
        let (admitted, waits) = (Arc::clone(&admitted), Arc::clone(&waits));
        agents.push(tokio::spawn(async move {
            while start.elapsed() < run_for {
                match limiter.acquire(1, 0, 0).await.expect("acquire") {
                    Admission::Go => {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                    Admission::Wait(d) => {
                        waits.fetch_add(1, Ordering::SeqCst);
                        // Honour the limiter's answer, as an agent does.
                        tokio::time::sleep(d.min(Duration::from_millis(50))).await;
                    }
                }
            }
        }));
    }
    for a in agents {
        a.await.expect("agent");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let admitted = admitted.load(Ordering::SeqCst) as f64;
    let ceiling = 5.0 + 10.0 * elapsed;
    assert!(
        admitted <= ceiling,
        "admitted {admitted} > burst + rate × {elapsed:.2}s = {ceiling:.1}"
    );
    // The limiter admits work, too: at least the burst and most of the refill.
    assert!(admitted >= 5.0 + 10.0 * 1.0, "admitted only {admitted}");
    assert!(
        waits.load(Ordering::SeqCst) > 0,
        "nobody was ever told to wait"
    );
}

async fn refused_acquire_takes_from_no_bucket(fx: &Fixture) {
    let pool = fx.pool();
    let limiter = pool.rate_limiter(RateLimits {
        // One request per 10 s: no refill to speak of during the test.
        requests: Bucket {
            per_minute: 6,
            burst: 10,
        },
        input_tokens: Bucket {
            per_minute: 600,
            burst: 1000,
        },
        output_tokens: Bucket::unlimited(),
    });
    assert_eq!(
        limiter.acquire(1, 1000, 0).await.expect("acquire"),
        Admission::Go
    );
    let refused = limiter.acquire(1, 1000, 0).await.expect("acquire");
    let Admission::Wait(wait) = refused else {
        panic!("the input-token bucket is empty: {refused:?}");
    };
    // 1000 tokens at 600/min take about 100 s to refill.
    assert!(wait > Duration::from_secs(90), "{wait:?}");
    // The refused call took no request: 9 of the 10 are left.
    for i in 0..9 {
        assert_eq!(
            limiter.acquire(1, 0, 0).await.expect("acquire"),
            Admission::Go,
            "request {i}"
        );
    }
    assert!(matches!(
        limiter.acquire(1, 0, 0).await.expect("acquire"),
        Admission::Wait(_)
    ));
}

async fn request_larger_than_a_bucket_is_an_error_not_an_endless_wait(fx: &Fixture) {
    let limiter = fx.pool().rate_limiter(RateLimits {
        requests: Bucket::per_minute(50),
        input_tokens: Bucket::per_minute(40_000),
        output_tokens: Bucket::per_minute(8_000),
    });
    let err = limiter
        .acquire(1, 50_000, 0)
        .await
        .expect_err("over capacity");
    assert!(matches!(
        err,
        CoordError::RateRequestTooLarge {
            requested: 50_000,
            capacity: 40_000,
            ..
        }
    ));
}

both_backends!(
    concurrent_agents_never_exceed_rate_plus_burst,
    refused_acquire_takes_from_no_bucket,
    request_larger_than_a_bucket_is_an_error_not_an_endless_wait,
);
