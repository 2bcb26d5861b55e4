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
