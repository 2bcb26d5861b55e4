//! Checkers of the transaction workloads (`txn_workload`).
//!
//! **bank**: every committed read of all accounts sums to the total the
//! accounts began with, has every account, and no balance below zero.
//!
//! **list-append**, in the manner of Elle (Kingsbury & Alvaro, 2020): each
//! value is appended once, so a list read names the transactions whose
//! appends it saw and in what order. From the reads the checker infers
//! each key's version order (the longest list read; every other read must
//! be a prefix of it), then builds the dependency graph of Adya's
//! anomalies over committed transactions (and indeterminate ones whose
//! appends were seen):
//!
//! - `ww`: the writer of one version → the writer of the next;
//! - `wr`: the writer of the version a transaction read → the reader;
//! - `rw`: a reader → the writer of the version after the one it read.
//!
//! A cycle of `ww` edges is **G0** (dirty write); of `ww` and `wr` edges,
//! **G1c** (circular information flow); with exactly one `rw` edge,
//! **G-single** (read skew, a G2 anomaly); with more, **G2**. Besides
//! cycles: **G1a** (a read saw a value of a transaction that failed),
//! **G1b** (a read saw a value a transaction later overwrote in the same
//! transaction), garbage (a value nobody appended), duplicates, reads that
//! are not prefixes of one order, and committed appends missing from a
//! read that began after they were acknowledged (lost). Each anomaly is
//! printed with its cycle or its reads.

use crate::checker::Verdict;
use crate::history::{Mop, Op, OpKind, Outcome};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// At most this many anomalies of one kind are printed.
const SHOWN: usize = 5;

pub fn check_bank(ops: &[Op], accounts: usize, total: i64) -> Verdict {
    let mut problems = Vec::new();
    let mut reads = 0usize;
    for op in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        let OpKind::BankRead {
            balances: Some(balances),
        } = &op.kind
        else {
            continue;
        };
        reads += 1;
        let sum: i64 = balances.iter().sum();
        let wrong = balances.len() != accounts || sum != total || balances.iter().any(|b| *b < 0);
        if wrong && problems.len() < SHOWN {
            problems.push(format!(
                "bank read by process {} at {:.3} s saw total {sum} (expected {total} over {accounts} accounts): {balances:?}",
                op.process,
                op.complete_ns as f64 / 1e9
            ));
        }
    }
    if reads == 0 {
        return Verdict::Unknown("no read of the bank committed".into());
    }
    if problems.is_empty() {
        Verdict::Valid
    } else {
        Verdict::Invalid(problems)
    }
}

/// What kind of dependency an edge is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dep {
    Ww,
    Wr,
    Rw,
}

impl Dep {
    fn name(self) -> &'static str {
        match self {
            Dep::Ww => "ww",
            Dep::Wr => "wr",
            Dep::Rw => "rw",
        }
    }
}

/// A key of the history: the group (the op's key) and the key within it.
type ListKey<'a> = (&'a str, u32);

/// One edge of a path: from, to, its kind, the key it is about.
type Hop = (usize, usize, Dep, String);

/// Which edge kinds a search may follow.
type EdgeFilter = fn(Dep) -> bool;

struct Graph {
    /// node → (to, kind, key shown)
    edges: Vec<Vec<(usize, Dep, String)>>,
}

impl Graph {
    fn new(nodes: usize) -> Graph {
        Graph {
            edges: vec![Vec::new(); nodes],
        }
    }

    fn add(&mut self, from: usize, to: usize, dep: Dep, key: String) {
        if from != to && !self.edges[from].iter().any(|(t, d, _)| *t == to && *d == dep) {
            self.edges[from].push((to, dep, key));
        }
    }

    /// Strongly connected components with more than one node, using only
    /// edges `allowed` keeps (Tarjan's algorithm, iterative).
    fn cyclic_components(&self, allowed: impl Fn(Dep) -> bool) -> Vec<Vec<usize>> {
        let n = self.edges.len();
        let mut index = vec![usize::MAX; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut components = Vec::new();
        let mut next = 0;
        for root in 0..n {
            if index[root] != usize::MAX {
                continue;
            }
            // (node, position in its edge list)
            let mut work = vec![(root, 0usize)];
            index[root] = next;
            low[root] = next;
            next += 1;
            stack.push(root);
            on_stack[root] = true;
            while let Some((node, at)) = work.pop() {
                let edges = &self.edges[node];
                if let Some(pos) = (at..edges.len()).find(|&i| allowed(edges[i].1)) {
                    work.push((node, pos + 1));
                    let to = edges[pos].0;
                    if index[to] == usize::MAX {
                        index[to] = next;
                        low[to] = next;
                        next += 1;
                        stack.push(to);
                        on_stack[to] = true;
                        work.push((to, 0));
                    } else if on_stack[to] {
                        low[node] = low[node].min(index[to]);
                    }
                    continue;
                }
                if let Some(&(parent, _)) = work.last() {
                    low[parent] = low[parent].min(low[node]);
                }
                if low[node] == index[node] {
                    let mut component = Vec::new();
                    while let Some(member) = stack.pop() {
                        on_stack[member] = false;
                        component.push(member);
                        if member == node {
                            break;
                        }
                    }
                    if component.len() > 1 {
                        components.push(component);
                    }
                }
            }
        }
        components
    }

    /// A shortest path from `from` to `to` over allowed edges inside
    /// `within`, as the edges taken.
    fn path(
        &self,
        from: usize,
        to: usize,
        within: &BTreeSet<usize>,
        allowed: impl Fn(Dep) -> bool,
    ) -> Option<Vec<Hop>> {
        let mut came_from: BTreeMap<usize, (usize, Dep, String)> = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        let mut seen = BTreeSet::from([from]);
        while let Some(node) = queue.pop_front() {
            for (next, dep, key) in &self.edges[node] {
                if !allowed(*dep) || !within.contains(next) {
                    continue;
                }
                if *next == to {
                    let mut path = vec![(node, *next, *dep, key.clone())];
                    let mut at = node;
                    while at != from {
                        let (prev, dep, key) = came_from[&at].clone();
                        path.push((prev, at, dep, key));
                        at = prev;
                    }
                    path.reverse();
                    return Some(path);
                }
                if seen.insert(*next) {
                    came_from.insert(*next, (node, *dep, key.clone()));
                    queue.push_back(*next);
                }
            }
        }
        None
    }
}

/// Checks the list-append history: anomalies found, each with what shows it.
pub fn check_list_append(ops: &[Op]) -> Verdict {
    // Transactions that may have taken effect: committed, or unknown.
    let txns: Vec<&Op> = ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Txn { .. }) && o.outcome != Outcome::Fail)
        .collect();
    let failed: Vec<&Op> = ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Txn { .. }) && o.outcome == Outcome::Fail)
        .collect();
    let mops_of = |op: &Op| -> Vec<Mop> {
        match &op.kind {
            OpKind::Txn { mops } => mops.clone(),
            _ => Vec::new(),
        }
    };
    let mut problems: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut report = |kind: &'static str, text: String| {
        let list = problems.entry(kind).or_default();
        if list.len() < SHOWN {
            list.push(text);
        }
    };
    // Who appended each value, and where in its transaction.
    let mut writer: BTreeMap<u64, (usize, ListKey)> = BTreeMap::new();
    let mut failed_values: BTreeMap<u64, &Op> = BTreeMap::new();
    // Per key and transaction, its appends in order (for G1b).
    let mut appends_of: BTreeMap<(ListKey, usize), Vec<u64>> = BTreeMap::new();
    for (t, op) in txns.iter().enumerate() {
        for mop in mops_of(op) {
            if let Mop::Append { key, value } = mop {
                let key = (op.key.as_str(), key);
                writer.insert(value, (t, key));
                appends_of.entry((key, t)).or_default().push(value);
            }
        }
    }
    for op in &failed {
        for mop in mops_of(op) {
            if let Mop::Append { value, .. } = mop {
                failed_values.insert(value, op);
            }
        }
    }
    // Every committed read: (txn, key, list).
    let mut reads: Vec<(usize, ListKey, Vec<u64>)> = Vec::new();
    for (t, op) in txns.iter().enumerate() {
        if op.outcome != Outcome::Ok {
            continue;
        }
        for mop in mops_of(op) {
            if let Mop::Read { key, list: Some(list) } = mop {
                reads.push((t, (op.key.as_str(), key), list));
            }
        }
    }
    let show = |t: usize| {
        let op = txns[t];
        format!(
            "T{t} (process {}, {:.3}–{:.3} s, {:?}: {})",
            op.process,
            op.invoke_ns as f64 / 1e9,
            op.complete_ns as f64 / 1e9,
            op.outcome,
            mops_of(op).iter().map(show_mop).collect::<Vec<_>>().join(" ")
        )
    };
    // Version order per key: the longest read; every read a prefix of it.
    let mut order: BTreeMap<ListKey, Vec<u64>> = BTreeMap::new();
    for (_, key, list) in &reads {
        let longest = order.entry(*key).or_default();
        if list.len() > longest.len() {
            *longest = list.clone();
        }
    }
    for (t, key, list) in &reads {
        let longest = &order[key];
        if let Some(at) = (0..list.len()).find(|&i| longest[i] != list[i]) {
            report(
                "incompatible-order",
                format!(
                    "key {}/{}: {} read {}, not a prefix of the longest read {}: at position {at} it has {}, the longest {}",
                    key.0,
                    key.1,
                    show(*t),
                    show_list(list),
                    show_list(longest),
                    list[at],
                    longest[at]
                ),
            );
        }
        let distinct: BTreeSet<&u64> = list.iter().collect();
        if distinct.len() != list.len() {
            report(
                "duplicate",
                format!("key {}/{}: {} read {list:?}", key.0, key.1, show(*t)),
            );
        }
        for value in list {
            match writer.get(value) {
                Some((_, written)) if written == key => {}
                Some((_, written)) => report(
                    "garbage",
                    format!(
                        "key {}/{}: {} read {value}, appended to {}/{}",
                        key.0,
                        key.1,
                        show(*t),
                        written.0,
                        written.1
                    ),
                ),
                None => match failed_values.get(value) {
                    Some(op) => report(
                        "G1a",
                        format!(
                            "key {}/{}: {} read {value}, appended by a transaction that failed ({:.3} s: {})",
                            key.0,
                            key.1,
                            show(*t),
                            op.complete_ns as f64 / 1e9,
                            op.error.as_deref().unwrap_or("")
                        ),
                    ),
                    None => report(
                        "garbage",
                        format!(
                            "key {}/{}: {} read {value}, which nobody appended",
                            key.0,
                            key.1,
                            show(*t)
                        ),
                    ),
                },
            }
        }
        // G1b: the last value read was not its writer's last append there.
        if let Some(last) = list.last() {
            if let Some((w, _)) = writer.get(last) {
                let theirs = &appends_of[&(*key, *w)];
                if *w != *t && theirs.last() != Some(last) {
                    report(
                        "G1b",
                        format!(
                            "key {}/{}: {} read {}, ending at {last}, an intermediate append of {}",
                            key.0,
                            key.1,
                            show(*t),
                            show_list(list),
                            show(*w)
                        ),
                    );
                }
            }
        }
    }
    // Lost: a committed append missing from a read that began after the
    // append was acknowledged (strict serializability). Per key, committed
    // appends by acknowledgement time; each read checks those before it.
    let mut acknowledged: BTreeMap<ListKey, Vec<(u64, usize, u64)>> = BTreeMap::new();
    for ((key, w), values) in &appends_of {
        if txns[*w].outcome == Outcome::Ok {
            let entry = acknowledged.entry(*key).or_default();
            entry.extend(values.iter().map(|v| (txns[*w].complete_ns, *w, *v)));
        }
    }
    for appends in acknowledged.values_mut() {
        appends.sort_unstable();
    }
    for (t, key, list) in &reads {
        let began = txns[*t].invoke_ns;
        let Some(appends) = acknowledged.get(key) else { continue };
        let seen: BTreeSet<&u64> = list.iter().collect();
        for (_, w, value) in appends.iter().take_while(|(done, _, _)| *done < began) {
            if !seen.contains(value) {
                report(
                    "lost",
                    format!(
                        "key {}/{}: {} read {}, without {value} appended by {}, acknowledged before it began",
                        key.0,
                        key.1,
                        show(*t),
                        show_list(list),
                        show(*w)
                    ),
                );
            }
        }
    }
    // The dependency graph.
    let mut graph = Graph::new(txns.len());
    for (key, longest) in &order {
        let name = format!("{}/{}", key.0, key.1);
        for pair in longest.windows(2) {
            if let (Some((a, _)), Some((b, _))) = (writer.get(&pair[0]), writer.get(&pair[1])) {
                graph.add(*a, *b, Dep::Ww, name.clone());
            }
        }
    }
    for (t, key, list) in &reads {
        let name = format!("{}/{}", key.0, key.1);
        if let Some((w, _)) = list.last().and_then(|last| writer.get(last)) {
            graph.add(*w, *t, Dep::Wr, name.clone());
        }
        let longest = &order[key];
        if let Some(next) = longest.get(list.len()) {
            if let Some((w, _)) = writer.get(next) {
                graph.add(*t, *w, Dep::Rw, name);
            }
        }
    }
    for component in graph.cyclic_components(|_| true) {
        let within: BTreeSet<usize> = component.iter().copied().collect();
        let cycle = find_cycle(&graph, &within);
        if let Some((kind, cycle)) = cycle {
            let text = cycle
                .iter()
                .map(|(from, _, dep, key)| format!("{} -{}({key})->", show(*from), dep.name()))
                .collect::<Vec<_>>()
                .join(" ");
            let first = cycle.first().map(|(from, ..)| *from).unwrap_or(0);
            report(kind, format!("{text} T{first}"));
        }
    }
    if problems.is_empty() {
        return Verdict::Valid;
    }
    Verdict::Invalid(
        problems
            .into_iter()
            .flat_map(|(kind, texts)| texts.into_iter().map(move |t| format!("{kind}: {t}")))
            .collect(),
    )
}

/// A list as the checker prints it: short ones whole, long ones by their end.
fn show_list(list: &[u64]) -> String {
    show_mop(&Mop::Read {
        key: 0,
        list: Some(list.to_vec()),
    })
    .trim_start_matches("r0=")
    .to_string()
}

/// A micro-operation in a line: `a2=17` appends 17 to key 2, `r2=[…,9,12](7)`
/// read key 2's list of 7 values ending 9, 12.
fn show_mop(mop: &Mop) -> String {
    match mop {
        Mop::Append { key, value } => format!("a{key}={value}"),
        Mop::Read { key, list: None } => format!("r{key}=?"),
        Mop::Read { key, list: Some(list) } if list.len() <= 3 => format!("r{key}={list:?}"),
        Mop::Read { key, list: Some(list) } => {
            let tail = &list[list.len() - 2..];
            format!("r{key}=[…,{},{}]({})", tail[0], tail[1], list.len())
        }
    }
}

/// The most specific cycle in a strongly connected component: of `ww`
/// edges only (G0), then `ww` and `wr` (G1c), then one `rw` edge
/// (G-single), then any (G2).
fn find_cycle(graph: &Graph, within: &BTreeSet<usize>) -> Option<(&'static str, Vec<Hop>)> {
    let classes: [(&'static str, EdgeFilter); 2] = [("G0", |d| d == Dep::Ww), ("G1c", |d| d != Dep::Rw)];
    for (kind, allowed) in classes {
        for component in graph.cyclic_components(allowed) {
            if component.iter().all(|n| within.contains(n)) {
                let inner: BTreeSet<usize> = component.iter().copied().collect();
                let start = component[0];
                for (next, dep, key) in &graph.edges[start] {
                    if allowed(*dep) && inner.contains(next) {
                        if let Some(mut back) = graph.path(*next, start, &inner, allowed) {
                            back.insert(0, (start, *next, *dep, key.clone()));
                            return Some((kind, back));
                        }
                    }
                }
            }
        }
    }
    // One anti-dependency closed by ww/wr edges.
    for &from in within {
        for (to, dep, key) in &graph.edges[from] {
            if *dep == Dep::Rw && within.contains(to) {
                if let Some(mut back) = graph.path(*to, from, within, |d| d != Dep::Rw) {
                    back.insert(0, (from, *to, *dep, key.clone()));
                    return Some(("G-single", back));
                }
            }
        }
    }
    let start = *within.iter().next()?;
    for (next, dep, key) in &graph.edges[start] {
        if within.contains(next) {
            if let Some(mut back) = graph.path(*next, start, within, |_| true) {
                back.insert(0, (start, *next, *dep, key.clone()));
                return Some(("G2", back));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(process: usize, at: u64, outcome: Outcome, mops: Vec<Mop>) -> Op {
        Op {
            process,
            key: "g".into(),
            kind: OpKind::Txn { mops },
            outcome,
            invoke_ns: at * 1_000,
            complete_ns: at * 1_000 + 500,
            error: None,
            version: None,
        }
    }

    fn read(key: u32, list: &[u64]) -> Mop {
        Mop::Read {
            key,
            list: Some(list.to_vec()),
        }
    }

    fn append(key: u32, value: u64) -> Mop {
        Mop::Append { key, value }
    }

    fn invalid_with(verdict: Verdict, kind: &str) -> Vec<String> {
        match verdict {
            Verdict::Invalid(why) => {
                assert!(why.iter().any(|w| w.starts_with(kind)), "{kind} expected: {why:?}");
                why
            }
            other => panic!("{kind} expected, got {other:?}"),
        }
    }

    #[test]
    fn a_serial_history_is_valid() {
        let ops = vec![
            txn(0, 1, Outcome::Ok, vec![append(0, 1), append(1, 2)]),
            txn(1, 2, Outcome::Ok, vec![read(0, &[1]), append(0, 3)]),
            txn(2, 3, Outcome::Ok, vec![read(0, &[1, 3]), read(1, &[2])]),
            txn(3, 4, Outcome::Fail, vec![append(1, 9)]),
            txn(4, 5, Outcome::Info, vec![append(1, 10)]),
        ];
        assert_eq!(check_list_append(&ops), Verdict::Valid);
    }

    #[test]
    fn a_lost_update_shows_as_a_committed_append_missing_from_a_later_read() {
        // Both read [1] and appended: T1's 5 is overwritten by T2's list.
        let ops = vec![
            txn(0, 1, Outcome::Ok, vec![append(0, 1)]),
            txn(1, 2, Outcome::Ok, vec![read(0, &[1]), append(0, 5), read(1, &[])]),
            txn(2, 2, Outcome::Ok, vec![read(0, &[1]), append(0, 6)]),
            txn(3, 9, Outcome::Ok, vec![read(0, &[1, 6])]),
        ];
        let why = invalid_with(check_list_append(&ops), "lost");
        assert!(why.iter().any(|w| w.contains("without 5")), "{why:?}");
    }

    #[test]
    fn read_skew_is_g_single_and_circular_flow_is_g1c() {
        // T1 reads x before T2's append and y after it.
        let skew = vec![
            txn(0, 1, Outcome::Ok, vec![append(0, 1), append(1, 2)]),
            txn(1, 2, Outcome::Ok, vec![append(0, 3), append(1, 4)]),
            txn(2, 3, Outcome::Ok, vec![read(0, &[1]), read(1, &[2, 4])]),
            txn(3, 4, Outcome::Ok, vec![read(0, &[1, 3])]),
        ];
        let why = invalid_with(check_list_append(&skew), "G-single");
        assert!(why.iter().any(|w| w.contains("-rw(g/0)->")), "{why:?}");
        // Each saw the other's append.
        let circular = vec![
            txn(0, 1, Outcome::Ok, vec![append(0, 1), read(1, &[2])]),
            txn(1, 1, Outcome::Ok, vec![append(1, 2), read(0, &[1])]),
        ];
        invalid_with(check_list_append(&circular), "G1c");
        // Two writers ordered one way on one key and the other way on another.
        let dirty = vec![
            txn(0, 1, Outcome::Ok, vec![append(0, 1), append(1, 4)]),
            txn(1, 1, Outcome::Ok, vec![append(0, 2), append(1, 3)]),
            txn(2, 5, Outcome::Ok, vec![read(0, &[1, 2]), read(1, &[3, 4])]),
        ];
        invalid_with(check_list_append(&dirty), "G0");
    }

    #[test]
    fn aborted_and_intermediate_reads_garbage_and_orders_are_caught() {
        let ops = vec![
            txn(0, 1, Outcome::Fail, vec![append(0, 7)]),
            txn(1, 2, Outcome::Ok, vec![append(1, 8), append(1, 9)]),
            txn(2, 3, Outcome::Ok, vec![read(0, &[7])]),
            txn(3, 4, Outcome::Ok, vec![read(1, &[8])]),
            txn(4, 5, Outcome::Ok, vec![read(2, &[42])]),
        ];
        let verdict = check_list_append(&ops);
        invalid_with(verdict.clone(), "G1a");
        invalid_with(verdict.clone(), "G1b");
        invalid_with(verdict, "garbage");
        let forked = vec![
            txn(0, 1, Outcome::Ok, vec![append(0, 1)]),
            txn(1, 2, Outcome::Ok, vec![append(0, 2)]),
            txn(2, 3, Outcome::Ok, vec![read(0, &[1])]),
            txn(3, 4, Outcome::Ok, vec![read(0, &[2])]),
        ];
        invalid_with(check_list_append(&forked), "incompatible-order");
    }

    #[test]
    fn bank_reads_must_keep_the_total() {
        let read = |balances: Vec<i64>| Op {
            process: 0,
            key: "bank".into(),
            kind: OpKind::BankRead {
                balances: Some(balances),
            },
            outcome: Outcome::Ok,
            invoke_ns: 0,
            complete_ns: 1,
            error: None,
            version: None,
        };
        assert_eq!(check_bank(&[read(vec![60, 40])], 2, 100), Verdict::Valid);
        assert!(matches!(check_bank(&[read(vec![60, 30])], 2, 100), Verdict::Invalid(_)));
        assert!(matches!(
            check_bank(&[read(vec![110, -10])], 2, 100),
            Verdict::Invalid(_)
        ));
        assert!(matches!(check_bank(&[], 2, 100), Verdict::Unknown(_)));
    }
}
