//! Named failpoints for fault tests (docs/failpoints.md). They exist only in
//! builds with the `failpoints` feature; otherwise every check here is a
//! constant `false` and costs nothing.

/// Whether failpoint `name` is on. `return` turns it on (any argument too).
pub fn is_on(name: &str) -> bool {
    #[cfg(feature = "failpoints")]
    {
        fail::eval(name, |_| ()).is_some()
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        false
    }
}

/// Failpoint `name` as a number: `return(N)` gives `Some(N)`, `return`
/// `Some(0)`; `None` when off.
pub fn number(name: &str) -> Option<u64> {
    #[cfg(feature = "failpoints")]
    {
        fail::eval(name, |arg| arg.and_then(|a| a.trim().parse::<u64>().ok()).unwrap_or(0))
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        None
    }
}

/// Whether failpoint `name` applies to `peer`: `return` means every peer,
/// `return(2,3)` only nodes 2 and 3. That is how one node is cut off from
/// some peers only (a partition between two groups, or a bridge).
pub fn blocks_peer(name: &str, peer: u64) -> bool {
    #[cfg(feature = "failpoints")]
    {
        fail::eval(name, |arg| match arg {
            None => true,
            Some(list) => list.split(',').any(|p| p.trim().parse::<u64>() == Ok(peer)),
        })
        .unwrap_or(false)
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = (name, peer);
        false
    }
}

/// Failpoint `name` as a pause of the calling thread: `return(MS)` blocks
/// it MS milliseconds, for a read held between two steps (a concurrent
/// write or removal lands in between). On a multi-threaded runtime the
/// worker first hands its other tasks away (`block_in_place`), so the rest
/// of the node keeps running. Nothing when off.
pub fn pause(name: &str) {
    #[cfg(feature = "failpoints")]
    {
        let ms = fail::eval(name, |arg| arg.and_then(|a| a.trim().parse::<u64>().ok()).unwrap_or(0));
        if let Some(ms) = ms {
            let sleep = || std::thread::sleep(std::time::Duration::from_millis(ms));
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(sleep),
                _ => sleep(),
            }
        }
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
    }
}

/// Failpoint `name` as an asynchronous delay: `return(MS)` waits MS
/// milliseconds without blocking a thread. Nothing when off.
pub async fn delay(name: &str) {
    #[cfg(feature = "failpoints")]
    {
        let ms = fail::eval(name, |arg| arg.and_then(|a| a.trim().parse::<u64>().ok()).unwrap_or(0));
        if let Some(ms) = ms {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
    }
}
