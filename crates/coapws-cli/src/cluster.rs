//! The cluster flags of `coapws serve`: join other instances through a NATS server, so that
//! each reaches the devices connected to any of them (`coapws::cluster`).

use anyhow::{Context, Result, bail};
use clap::Args;
use coapws::cluster::{Cluster, ClusterConfig};
use std::path::PathBuf;
use std::time::Duration;

/// Cluster flags.
#[derive(Args, Debug, Default)]
pub struct ClusterArgs {
    /// Join a cluster through this NATS server (e.g. nats://127.0.0.1:4222; JetStream on):
    /// the directory is shared, and devices connected to any instance are reached from all.
    /// Needs --rd-proxy-domain.
    #[arg(long, value_name = "NATS_URL", requires = "rd_proxy_domain")]
    cluster: Option<String>,
    /// The cluster's name (subjects `coapws.NAME.…`, buckets `coapws_NAME_…`).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "default",
        requires = "cluster"
    )]
    cluster_name: String,
    /// This instance's id in the cluster (default: random).
    #[arg(long, value_name = "ID", requires = "cluster")]
    cluster_instance: Option<String>,
    /// NATS credentials file (.creds).
    #[arg(long, value_name = "FILE", requires = "cluster")]
    cluster_creds: Option<PathBuf>,
    /// NATS user and password, as USER:PASSWORD.
    #[arg(long, value_name = "USER:PASSWORD", requires = "cluster")]
    cluster_user: Option<String>,
    /// NATS token.
    #[arg(long, value_name = "TOKEN", requires = "cluster")]
    cluster_token: Option<String>,
    /// Seconds after which an instance whose heartbeat stopped counts as gone, and its
    /// registrations with it.
    #[arg(long, value_name = "SECS", default_value_t = 5, requires = "cluster",
          value_parser = clap::value_parser!(u64).range(2..=300))]
    cluster_lapse: u64,
}

/// Joins the cluster the flags name, if any; `patience` bounds routed requests.
pub async fn join(args: &ClusterArgs, patience: Duration) -> Result<Option<Cluster>> {
    let Some(url) = &args.cluster else {
        return Ok(None);
    };
    let mut config = ClusterConfig::new(url.clone(), args.cluster_name.clone());
    if let Some(i) = &args.cluster_instance {
        config.instance = i.clone();
    }
    config.credentials_file = args.cluster_creds.clone();
    if let Some(up) = &args.cluster_user {
        let Some((u, p)) = up.split_once(':') else {
            bail!("--cluster-user wants USER:PASSWORD");
        };
        config.user_password = Some((u.to_owned(), p.to_owned()));
    }
    config.token = args.cluster_token.clone();
    config.lapse = Duration::from_secs(args.cluster_lapse);
    config.heartbeat = (config.lapse / 5).max(Duration::from_millis(200));
    config.patience = patience;
    let cluster = Cluster::join(config)
        .await
        .with_context(|| format!("--cluster {url}"))?;
    Ok(Some(cluster))
}
