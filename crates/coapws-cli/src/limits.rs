//! The process's descriptor limit: `serve`, `proxy` and `bench` raise the soft RLIMIT_NOFILE
//! to the hard one at start (every connection is a descriptor; a soft limit of 1024, the
//! usual default, would cap a server at about a thousand connections while the system allows
//! far more), and say so when the limit is below what they were asked to hold.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises the soft descriptor limit to the hard one; returns the limit now in force (`None`
/// where it cannot be read, or there is none).
pub fn raise_descriptor_limit() -> Option<u64> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current == maximum {
        return current;
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: maximum,
            maximum,
        },
    ) {
        Ok(()) => {
            tracing::debug!(from = ?current, to = ?maximum, "descriptor limit raised");
            maximum
        }
        Err(e) => {
            tracing::debug!(error = %e, "descriptor limit not raised");
            current
        }
    }
}

/// Descriptors a process needs besides its connections (listeners, the runtime's, files).
const SPARE: usize = 64;

/// True if `limit` holds fewer than `connections` (and the [`SPARE`] ones besides).
pub fn too_few(limit: Option<u64>, connections: usize) -> bool {
    let wanted = connections.saturating_add(SPARE);
    limit.is_some_and(|l| u64::try_from(wanted).is_ok_and(|w| w > l))
}

#[cfg(test)]
mod tests {
    use super::{SPARE, raise_descriptor_limit, too_few};
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

    #[test]
    fn the_soft_descriptor_limit_ends_at_the_hard_one() {
        // Lowered first (always allowed), so that the raise has something to do.
        let Rlimit { maximum, .. } = getrlimit(Resource::Nofile);
        let low = maximum.map_or(256, |m| m.min(256));
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(low),
                maximum,
            },
        )
        .unwrap();
        let limit = raise_descriptor_limit();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(
            now.current, now.maximum,
            "soft limit raised to the hard one"
        );
        assert_eq!(limit, now.current);
        assert!(!too_few(limit, 10));
        assert!(limit.is_none_or(|l| too_few(limit, l as usize - SPARE + 1)));
        assert!(limit.is_none_or(|l| !too_few(limit, l as usize - SPARE)));
    }
}
