//! Several `coapws serve` instances as one: through a NATS server, with the official
//! `async-nats` client, an instance reaches the devices connected to the others.
//!
//! - The Resource Directory's registrations live in JetStream key-value (`store.rs`), so a
//!   lookup on any instance lists endpoints registered anywhere. Each entry names the
//!   instance holding it; an instance's heartbeat lapsing removes its entries.
//! - Routing follows that directory: a request for device `NAME` that is not connected here
//!   goes, as a NATS request, to `coapws.<cluster>.inst.<holder>.ep.<NAME>`, which only the
//!   holding instance subscribes to (its `inst.<id>.ep.*`). So a device that re-registers
//!   elsewhere (a takeover: the newest registration of a name wins, as RFC 9176 §5.3 has a
//!   re-registration replace the old one) is never answered for by two instances.
//! - The CoAP message crosses whole (`wire.rs`): block-wise transfers happen on each side's
//!   own hops. An observation crosses as a stream of NATS messages to the observer's inbox,
//!   both ends saying "alive" while it lasts.
//! - NATS down: local devices keep working; remote ones get 5.03 with Max-Age at once; the
//!   client reconnects in the background and routing resumes by itself.

mod store;
mod wire;

pub use store::KvStore;

use crate::endpoint::Endpoint;
use crate::proxy::{Devices, Next, Notifications, Router, diagnostic, error_answer};
use crate::rd::RdStore;
use crate::site::BoxFuture;
use async_nats::jetstream;
use bytes::Bytes;
use coapws_proto::code::Code;
use coapws_proto::message::Message;
use coapws_proto::option::OptionNumber;
use futures_util::StreamExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// How to join a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222` (several, comma-separated).
    pub url: String,
    /// The cluster's name: subjects start `coapws.<name>.`, buckets `coapws_<name>_`.
    pub name: String,
    /// This instance's id, unique in the cluster (default: random).
    pub instance: String,
    /// How often this instance writes its heartbeat.
    pub heartbeat: Duration,
    /// An instance whose heartbeat is older than this is gone: its registrations with it.
    pub lapse: Duration,
    /// How long a routed request may take (the proxy's patience).
    pub patience: Duration,
    /// NATS credentials: a `.creds` file.
    pub credentials_file: Option<PathBuf>,
    /// NATS credentials: user and password.
    pub user_password: Option<(String, String)>,
    /// NATS credentials: a token.
    pub token: Option<String>,
}

impl ClusterConfig {
    /// Defaults for joining cluster `name` through `url`.
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            url: url.into(),
            name: name.into(),
            instance: random_id(),
            heartbeat: Duration::from_secs(1),
            lapse: Duration::from_secs(5),
            patience: Duration::from_secs(15),
            credentials_file: None,
            user_password: None,
            token: None,
        }
    }
}

fn random_id() -> String {
    use std::hash::BuildHasher;
    let n = std::hash::RandomState::new().hash_one(SystemTime::now());
    format!("i{:012x}", n & 0xffff_ffff_ffff)
}

/// Why joining a cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The cluster name or instance id has characters subjects and buckets cannot hold.
    #[error("{0:?}: use letters, digits, '-' and '_' only")]
    Name(String),
    /// The credentials could not be read.
    #[error("NATS credentials: {0}")]
    Credentials(String),
    /// No connection to the NATS server.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// JetStream (key-value) is not available or refused the buckets.
    #[error("NATS JetStream key-value: {0} (is the server run with -js?)")]
    JetStream(String),
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A joined cluster; cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    client: async_nats::Client,
    store: KvStore,
    heartbeats: jetstream::kv::Store,
}

/// The wait for a first connection when joining.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Cluster {
    /// Connects to the NATS server (retrying in the background if it goes away later),
    /// opens the cluster's key-value buckets and starts the heartbeat.
    pub async fn join(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        for n in [&config.name, &config.instance] {
            if !valid_name(n) {
                return Err(ClusterError::Name(n.clone()));
            }
        }
        let since = Arc::new(std::sync::Mutex::new(Instant::now()));
        let since_cb = since.clone();
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("coapws {}", config.instance))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(move |event| {
                let since = since_cb.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            *since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                            info!("cluster: connected to NATS")
                        }
                        async_nats::Event::Disconnected => {
                            warn!("cluster: NATS connection lost; reconnecting")
                        }
                        other => debug!(%other, "cluster: NATS event"),
                    }
                }
            });
        if let Some(f) = &config.credentials_file {
            options = options
                .credentials_file(f)
                .await
                .map_err(|e| ClusterError::Credentials(e.to_string()))?;
        }
        if let Some((u, p)) = &config.user_password {
            options = options.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &config.token {
            options = options.token(t.clone());
        }
        let connect_error = |reason: String| ClusterError::Connect {
            url: config.url.clone(),
            reason,
        };
        let client = options
            .connect(config.url.as_str())
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let deadline = Instant::now() + JOIN_TIMEOUT;
        while client.connection_state() != async_nats::connection::State::Connected {
            if Instant::now() > deadline {
                return Err(connect_error(format!(
                    "not connected within {JOIN_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let js = jetstream::new(client.clone());
        let bucket = |suffix: &str, history: i64| jetstream::kv::Config {
            bucket: format!("coapws_{}_{suffix}", config.name),
            history,
            ..Default::default()
        };
        let rd = js
            .create_or_update_key_value(bucket("rd", 1))
            .await
            .map_err(|e| ClusterError::JetStream(e.to_string()))?;
        let heartbeats = js
            .create_or_update_key_value(bucket("hb", 1))
            .await
            .map_err(|e| ClusterError::JetStream(e.to_string()))?;
        let store = KvStore::open(
            rd,
            heartbeats.clone(),
            config.instance.clone(),
            config.lapse,
            since,
        )
        .await;
        let cluster = Cluster {
            inner: Arc::new(Inner {
                config,
                client,
                store,
                heartbeats,
            }),
        };
        cluster.beat().await;
        tokio::spawn(heartbeat(Arc::downgrade(&cluster.inner)));
        info!(name = %cluster.inner.config.name, instance = %cluster.inner.config.instance,
              "cluster: joined");
        Ok(cluster)
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.inner.config.instance
    }

    /// The shared store for the Resource Directory.
    pub fn store(&self) -> Arc<dyn RdStore> {
        Arc::new(self.inner.store.clone())
    }

    /// The router for the proxy: devices held by other instances.
    pub fn router(&self) -> Arc<dyn Router> {
        Arc::new(self.clone())
    }

    /// Keeps `rd`'s connections true to the shared directory: when another instance writes a
    /// registration this one holds the connection of (the endpoint registered again there),
    /// this one lets go of that connection, so it never answers for the endpoint again.
    pub fn follow_takeovers(&self, rd: crate::rd::ResourceDirectory) {
        self.inner.store.watch_foreign(move |id| rd.untie(id));
    }

    /// True while the NATS connection is up.
    pub fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Answers the requests other instances route to devices connected here (`devices`),
    /// sending them on with `client`. Runs until the cluster is dropped.
    pub async fn serve(
        &self,
        devices: Arc<dyn Devices>,
        client: Endpoint,
    ) -> Result<(), ClusterError> {
        let subject = format!("{}.ep.*", self.instance_prefix(&self.inner.config.instance));
        let mut sub = self
            .inner
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|e| ClusterError::Connect {
                url: self.inner.config.url.clone(),
                reason: e.to_string(),
            })?;
        info!(%subject, "cluster: serving routed requests");
        let cluster = self.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let (c, d, e) = (cluster.clone(), devices.clone(), client.clone());
                tokio::spawn(async move { c.serve_one(m, d, e).await });
            }
        });
        Ok(())
    }

    fn instance_prefix(&self, instance: &str) -> String {
        format!("coapws.{}.inst.{instance}", self.inner.config.name)
    }

    fn max_payload(&self) -> usize {
        self.inner.client.server_info().max_payload
    }

    async fn beat(&self) {
        let now = store_now();
        if let Err(e) = self
            .inner
            .heartbeats
            .put(&self.inner.config.instance, Bytes::from(now))
            .await
        {
            debug!(error = %e, "cluster: heartbeat not written");
        }
    }

    /// One routed request: to the device it names, over its own connection.
    async fn serve_one(&self, m: async_nats::Message, devices: Arc<dyn Devices>, client: Endpoint) {
        let Some(reply) = m.reply.clone() else {
            return;
        };
        let name = m.subject.rsplit('.').next().unwrap_or_default().to_owned();
        let answer = |msg: Message| {
            let c = self.inner.client.clone();
            let reply = reply.clone();
            async move {
                let payload = wire::encode(&msg).unwrap_or_default();
                let _ = c
                    .publish_with_headers(reply, wire::headers(wire::END), payload)
                    .await;
            }
        };
        let request = match wire::decode(&m.payload, self.max_payload()) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cluster: undecodable routed request");
                return answer(diagnostic(Code::BAD_REQUEST, "undecodable routed request")).await;
            }
        };
        let Some(remote) = devices.remote(&name).filter(|r| r.is_connected()) else {
            return answer(diagnostic(
                Code::NOT_FOUND,
                format!("device {name:?} is not connected"),
            ))
            .await;
        };
        match wire::kind(&m) {
            Some(wire::OBSERVE) => self.serve_observation(reply, request, remote, client).await,
            _ => {
                let patience = self.inner.config.patience;
                let got = tokio::time::timeout(patience, client.request_to(&remote, request)).await;
                let response = match got {
                    Ok(Ok(r)) => r.message,
                    Ok(Err(e)) => error_answer(&e),
                    Err(_) => error_answer(&crate::error::Error::Timeout),
                };
                let response =
                    if wire::encode(&response).map_or(true, |p| p.len() > self.max_payload()) {
                        diagnostic(
                            Code::BAD_GATEWAY,
                            "the answer is too large to cross the cluster",
                        )
                    } else {
                        response
                    };
                answer(response).await;
            }
        }
    }

    /// An observation routed here: notifications go to `reply` until the device's
    /// observation ends, the observer cancels, or it stops saying it is alive.
    async fn serve_observation(
        &self,
        reply: async_nats::Subject,
        registration: Message,
        remote: crate::Remote,
        client: Endpoint,
    ) {
        let nats = &self.inner.client;
        let mut control = match nats.subscribe(format!("{reply}.ctl")).await {
            Ok(s) => s,
            Err(e) => return warn!(error = %e, "cluster: cannot follow the observer"),
        };
        let mut upstream = match client.observe_to(&remote, registration).await {
            Ok(o) => o,
            Err(e) => {
                let p = wire::encode(&error_answer(&e)).unwrap_or_default();
                let _ = nats
                    .publish_with_headers(reply, wire::headers(wire::END), p)
                    .await;
                return;
            }
        };
        let lapse = self.inner.config.lapse;
        let mut heard = Instant::now();
        let mut tick = tokio::time::interval(self.inner.config.heartbeat);
        let why = loop {
            tokio::select! {
                n = Notifications::next(&mut upstream) => {
                    let (kind, m) = match n {
                        Ok(m) => (wire::NOTIFICATION, m),
                        Err((m, true)) => (wire::END, m.with_uint_option(OptionNumber::OBSERVE, 0)),
                        Err((m, false)) => (wire::END, m),
                    };
                    let p = wire::encode(&m).unwrap_or_default();
                    let _ = nats.publish_with_headers(reply.clone(), wire::headers(kind), p).await;
                    if kind == wire::END {
                        break "the device ended it";
                    }
                }
                c = control.next() => match c.as_ref().and_then(wire::kind) {
                    Some(wire::CANCEL) | None => break "the observer cancelled",
                    _ => heard = Instant::now(),
                },
                _ = tick.tick() => {
                    if heard.elapsed() > lapse {
                        break "the observer went silent";
                    }
                    let _ = nats.publish_with_headers(reply.clone(), wire::headers(wire::ALIVE), Bytes::new()).await;
                }
            }
        };
        debug!(why, "cluster: routed observation over");
    }
}

fn store_now() -> String {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        .to_string()
}

async fn heartbeat(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(i) = inner.upgrade() else { return };
        let period = i.config.heartbeat;
        Cluster { inner: i }.beat().await;
        tokio::time::sleep(period).await;
    }
}

/// 5.03 with Max-Age: the cluster cannot be reached now.
fn unreachable() -> Message {
    diagnostic(
        Code::SERVICE_UNAVAILABLE,
        "the cluster is unreachable (NATS down); try again",
    )
    .with_uint_option(OptionNumber::MAX_AGE, 5)
}

impl Cluster {
    /// The subject of device `name`'s holder, or the answer to give at once.
    async fn route(&self, name: &str) -> Result<String, Message> {
        if !self.is_connected() {
            return Err(unreachable());
        }
        match self.inner.store.owner_of(name) {
            Some(owner) if owner != self.inner.config.instance => {
                Ok(format!("{}.ep.{name}", self.instance_prefix(&owner)))
            }
            _ => Err(diagnostic(
                Code::NOT_FOUND,
                format!("device {name:?} is not connected"),
            )),
        }
    }

    fn encode_request(&self, m: &Message) -> Result<Bytes, Message> {
        match wire::encode(m) {
            Ok(p) if p.len() <= self.max_payload() => Ok(p),
            _ => Err(diagnostic(
                Code::REQUEST_ENTITY_TOO_LARGE,
                "too large to cross the cluster",
            )
            .with_uint_option(
                OptionNumber::SIZE1,
                u32::try_from(self.max_payload()).unwrap_or(u32::MAX),
            )),
        }
    }
}

impl Router for Cluster {
    fn request(&self, name: &str, request: Message) -> BoxFuture<Message> {
        let (c, name) = (self.clone(), name.to_owned());
        Box::pin(async move {
            let subject = match c.route(&name).await {
                Ok(s) => s,
                Err(answer) => return answer,
            };
            let payload = match c.encode_request(&request) {
                Ok(p) => p,
                Err(answer) => return answer,
            };
            let r = async_nats::Request::new()
                .headers(wire::headers(wire::REQUEST))
                .payload(payload)
                .timeout(Some(c.inner.config.patience));
            match c.inner.client.send_request(subject, r).await {
                Ok(m) => wire::decode(&m.payload, c.max_payload()).unwrap_or_else(|e| {
                    diagnostic(Code::BAD_GATEWAY, format!("undecodable routed answer: {e}"))
                }),
                Err(e) => {
                    use async_nats::RequestErrorKind as K;
                    info!(device = %name, error = %e, "cluster: routed request failed");
                    match e.kind() {
                        K::NoResponders => {
                            diagnostic(Code::GATEWAY_TIMEOUT, "the device's instance is gone")
                        }
                        K::TimedOut => diagnostic(
                            Code::GATEWAY_TIMEOUT,
                            "the device's instance did not answer in time",
                        ),
                        K::Other => unreachable(),
                    }
                }
            }
        })
    }

    fn observe(
        &self,
        name: &str,
        registration: Message,
    ) -> BoxFuture<Result<Box<dyn Notifications>, Message>> {
        let (c, name) = (self.clone(), name.to_owned());
        Box::pin(async move {
            let subject = c.route(&name).await?;
            let payload = c.encode_request(&registration)?;
            let nats = c.inner.client.clone();
            let inbox = nats.new_inbox();
            let sub = nats
                .subscribe(inbox.clone())
                .await
                .map_err(|_| unreachable())?;
            nats.publish_with_reply_and_headers(
                subject,
                inbox.clone(),
                wire::headers(wire::OBSERVE),
                payload,
            )
            .await
            .map_err(|_| unreachable())?;
            let (tx, rx) = mpsc::channel(32);
            tokio::spawn(follow(c.clone(), sub, inbox, tx));
            Ok(Box::new(Routed { rx }) as Box<dyn Notifications>)
        })
    }
}

/// An observation of a device on another instance, as the relay reads it.
struct Routed {
    rx: mpsc::Receiver<Result<Message, (Message, bool)>>,
}

impl Notifications for Routed {
    fn next(&mut self) -> Next<'_> {
        Box::pin(async move {
            match self.rx.recv().await {
                Some(item) => item,
                None => Err((
                    diagnostic(Code::BAD_GATEWAY, "routed observation lost"),
                    false,
                )),
            }
        })
    }
}

/// Reads a routed observation's inbox until it ends; says "alive" to the holder meanwhile,
/// and "cancel" once the relay has dropped its end.
async fn follow(
    c: Cluster,
    mut sub: async_nats::Subscriber,
    inbox: String,
    tx: mpsc::Sender<Result<Message, (Message, bool)>>,
) {
    let nats = c.inner.client.clone();
    let control = format!("{inbox}.ctl");
    let lapse = c.inner.config.lapse;
    let mut heard = Instant::now();
    let mut tick = tokio::time::interval(c.inner.config.heartbeat);
    let max = c.max_payload();
    loop {
        tokio::select! {
            m = sub.next() => {
                let Some(m) = m else {
                    let _ = tx.send(Err((unreachable(), false))).await;
                    break;
                };
                heard = Instant::now();
                if m.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                    let _ = tx.send(Err((diagnostic(Code::GATEWAY_TIMEOUT, "the device's instance is gone"), false))).await;
                    break;
                }
                let decoded = wire::decode(&m.payload, max);
                match (wire::kind(&m), decoded) {
                    (Some(wire::ALIVE), _) => {}
                    (Some(wire::NOTIFICATION), Ok(n)) => {
                        if tx.send(Ok(n)).await.is_err() {
                            break;
                        }
                    }
                    (_, Ok(last)) => {
                        let was_2xx = last.code.is_success();
                        let mut last = last;
                        last.options.remove(OptionNumber::OBSERVE);
                        let _ = tx.send(Err((last, was_2xx))).await;
                        break;
                    }
                    (_, Err(e)) => {
                        let _ = tx.send(Err((diagnostic(Code::BAD_GATEWAY, format!("undecodable notification: {e}")), false))).await;
                        break;
                    }
                }
            }
            _ = tx.closed() => break,
            _ = tick.tick() => {
                if heard.elapsed() > lapse {
                    let _ = tx.send(Err((diagnostic(Code::GATEWAY_TIMEOUT, "the device's instance went silent"), false))).await;
                    break;
                }
                let _ = nats.publish_with_headers(control.clone(), wire::headers(wire::ALIVE), Bytes::new()).await;
            }
        }
    }
    let _ = nats
        .publish_with_headers(control, wire::headers(wire::CANCEL), Bytes::new())
        .await;
}
