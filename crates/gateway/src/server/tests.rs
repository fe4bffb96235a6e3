use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    time::{Duration, Instant},
};

use super::{
    connection::{ConnState, Wait},
    preface::{h2_preface, H2_PREFACE},
    Throttle,
};

/// A connected pair on loopback: (client, server side).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// A future that counts how often it is polled.
struct Counted<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

#[tokio::test]
async fn the_preface_tells_h2c_from_http1() {
    let (mut client, server) = pair().await;
    client.write_all(H2_PREFACE).await.unwrap();
    assert!(h2_preface(&server).await.unwrap());
    // Peeked, not read: the bytes are still there for hyper.
    let mut buf = [0u8; 24];
    assert_eq!(server.peek(&mut buf).await.unwrap(), 24);

    let (mut client, server) = pair().await;
    client
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\n")
        .await
        .unwrap();
    assert!(!h2_preface(&server).await.unwrap());

    // A client that closes without a byte.
    let (client, server) = pair().await;
    drop(client);
    assert!(!h2_preface(&server).await.unwrap());
}

#[tokio::test]
async fn a_client_stalled_inside_the_preface_is_waited_for_without_polling() {
    let (mut client, server) = pair().await;
    client.write_all(&H2_PREFACE[..10]).await.unwrap();
    let polls = Arc::new(AtomicUsize::new(0));
    let detect = tokio::spawn(Counted {
        inner: Box::pin(async move { h2_preface(&server).await }),
        polls: polls.clone(),
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!detect.is_finished());
    // The first poll, and perhaps one wake for bytes that arrived after it. A loop that
    // sleeps 1 ms between peeks is polled ~300 times here.
    let stalled = polls.load(Ordering::Relaxed);
    assert!(
        stalled <= 3,
        "polled {stalled} times while the client sent nothing"
    );
    client.write_all(&H2_PREFACE[10..]).await.unwrap();
    assert!(detect.await.unwrap().unwrap());
    assert!(polls.load(Ordering::Relaxed) <= stalled + 3);
}

#[tokio::test]
async fn a_preface_cut_short_by_the_client_closing_is_not_waited_for() {
    // The closed readiness is never cleared: waiting on it for the rest would spin.
    for gap in [false, true] {
        let (mut client, server) = pair().await;
        client.write_all(&H2_PREFACE[..5]).await.unwrap();
        let detect = tokio::spawn(async move { h2_preface(&server).await });
        if gap {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client.shutdown().await.unwrap();
        let verdict = tokio::time::timeout(Duration::from_secs(5), detect)
            .await
            .expect("a half-closed client is answered at once")
            .unwrap()
            .unwrap();
        assert!(!verdict);
    }
}

#[tokio::test]
async fn a_connection_waits_for_a_head_then_is_busy_then_idle() {
    let accepted = Instant::now();
    let h1 = ConnState::new(true, accepted);
    let (wait, since, token) = h1.waiting().unwrap();
    assert_eq!((wait, since), (Wait::Head, accepted));
    assert!(h1.still(token));

    // The request began with the connection (its head timed from the accept).
    let later = accepted + Duration::from_secs(1);
    assert_eq!(h1.begin(later), accepted);
    assert!(h1.waiting().is_none(), "busy");
    assert!(!h1.still(token));
    h1.end();
    let (wait, _, idle) = h1.waiting().unwrap();
    assert_eq!(wait, Wait::Idle);

    // h2 starts idle; two streams, idle only after both.
    let h2 = ConnState::new(false, accepted);
    assert_eq!(h2.waiting().unwrap().0, Wait::Idle);
    assert_eq!(h2.begin(later), later);
    h2.begin(later);
    h2.end();
    assert!(h2.waiting().is_none());
    h2.end();
    assert_eq!(h2.waiting().unwrap().0, Wait::Idle);
    assert!(h1.still(idle));
}

#[test]
fn the_throttle_lets_one_warning_through_per_period() {
    let t = Throttle::default();
    assert!(t.due());
    assert!(!t.due());
    assert!(!t.due());
}
