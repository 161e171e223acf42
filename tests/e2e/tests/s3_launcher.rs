//! The S3 launcher starts a real moto server that stores objects faithfully (single and
//! multipart uploads), refuses requests not signed with its key, and leaves no process behind.

use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata as _;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use maos_e2e::launch::s3::S3Server;

/// The smallest part S3 accepts for any part but the last.
const MIB_5: usize = 5 * 1024 * 1024;

/// Deterministic bytes that differ from part to part, so a swapped or truncated part shows.
fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

async fn start() -> S3Server {
    S3Server::start().await.expect("start moto_server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_answers_requests_signed_with_its_key() {
    let server = start().await;
    assert!(
        server.endpoint().starts_with("http://127.0.0.1:"),
        "{}",
        server.endpoint()
    );
    let buckets = server
        .client()
        .list_buckets()
        .send()
        .await
        .expect("ListBuckets with the server's key");
    assert!(buckets.buckets().is_empty(), "{buckets:?}");
    server
        .create_bucket("maos-checkpoints")
        .await
        .expect("create bucket");
    let buckets = server
        .client()
        .list_buckets()
        .send()
        .await
        .expect("ListBuckets");
    let names: Vec<&str> = buckets.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, ["maos-checkpoints"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_env_names_this_server_and_its_key() {
    let server = start().await;
    let env: std::collections::HashMap<String, String> =
        server.operator_env().into_iter().collect();
    assert_eq!(env["MAOS_S3_ENDPOINT"], server.endpoint());
    assert_eq!(env["MAOS_S3_FORCE_PATH_STYLE"], "true");
    assert_eq!(env["MAOS_S3_REGION"], S3Server::REGION);
    assert_eq!(env["AWS_REGION"], S3Server::REGION);
    assert_eq!(env["AWS_ACCESS_KEY_ID"], server.access_key_id());
    assert_eq!(env["AWS_SECRET_ACCESS_KEY"], server.secret_access_key());
    assert!(!server.access_key_id().is_empty());
    assert!(!server.secret_access_key().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_put_then_get_is_byte_identical() {
    let server = start().await;
    server
        .create_bucket("objects")
        .await
        .expect("create bucket");
    let client = server.client();
    let data = pseudo_random_bytes(1024 * 1024 + 17, 1);
    client
        .put_object()
        .bucket("objects")
        .key("tasks/t1/checkpoint.bin")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .expect("PutObject");
    let read = server
        .object("objects", "tasks/t1/checkpoint.bin")
        .await
        .expect("GetObject")
        .expect("the object exists");
    assert_eq!(read.len(), data.len());
    assert!(
        read == data,
        "the object read back differs from the one put"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_reads_back_byte_identical() {
    let server = start().await;
    server
        .create_bucket("multipart")
        .await
        .expect("create bucket");
    let client = server.client();
    let parts = [
        pseudo_random_bytes(MIB_5, 1),
        pseudo_random_bytes(MIB_5, 2),
        pseudo_random_bytes(12_345, 3),
    ];
    let upload = client
        .create_multipart_upload()
        .bucket("multipart")
        .key("big")
        .send()
        .await
        .expect("CreateMultipartUpload");
    let upload_id = upload.upload_id().expect("an upload id");
    let mut completed = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        let number = i32::try_from(index + 1).expect("few parts");
        let uploaded = client
            .upload_part()
            .bucket("multipart")
            .key("big")
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(part.clone()))
            .send()
            .await
            .expect("UploadPart");
        completed.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(uploaded.e_tag().expect("an ETag"))
                .build(),
        );
    }
    client
        .complete_multipart_upload()
        .bucket("multipart")
        .key("big")
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .expect("CompleteMultipartUpload");
    let expected = parts.concat();
    let read = server
        .object("multipart", "big")
        .await
        .expect("GetObject")
        .expect("the object exists");
    assert_eq!(read.len(), 2 * MIB_5 + 12_345);
    assert!(
        read == expected,
        "the object read back differs from its parts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_access_key_is_refused_with_invalid_access_key_id() {
    let server = start().await;
    server
        .create_bucket("private")
        .await
        .expect("create bucket");
    let err = server
        .client_with_credentials("AKIAUNKNOWNUNKNOWN00", "not-a-secret")
        .list_objects_v2()
        .bucket("private")
        .send()
        .await
        .expect_err("a key moto does not know is refused");
    assert_eq!(err.code(), Some("InvalidAccessKeyId"), "{err:?}");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_refused_with_signature_does_not_match() {
    let server = start().await;
    server
        .create_bucket("private")
        .await
        .expect("create bucket");
    let err = server
        .client_with_credentials(server.access_key_id(), "a-wrong-secret")
        .put_object()
        .bucket("private")
        .key("intruder")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("a wrong secret is refused");
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"), "{err:?}");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    // Nothing was written.
    let listed = server
        .client()
        .list_objects_v2()
        .bucket("private")
        .send()
        .await
        .expect("ListObjectsV2 with the right key");
    assert_eq!(listed.key_count(), Some(0), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_process_is_gone_after_the_handle_is_dropped() {
    let server = start().await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.pid()).expect("a pid"));
    assert!(
        nix::sys::signal::kill(pid, None).is_ok(),
        "moto_server {pid} runs while its handle lives"
    );
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while nix::sys::signal::kill(pid, None).is_ok() {
        assert!(
            Instant::now() < deadline,
            "moto_server {pid} outlived its handle"
        );
        // A poll interval, not synchronisation: the condition is re-checked each round.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
