//! Transaction workloads (docs/transactions.md): each operation is one
//! transaction, attempted once, so the history shows every abort.
//!
//! - **bank**: [`ACCOUNTS`] accounts under one routing key, each starting
//!   at [`INITIAL_BALANCE`]; transfers move a random amount between two
//!   accounts if the payer has it; read-only transactions read every
//!   account. The total never changes, and no committed read sees a
//!   partial transfer.
//! - **list-append**: groups of [`LIST_KEYS`] keys under one routing key
//!   (a fresh group every [`TXNS_PER_GROUP`] transactions); each
//!   transaction reads and appends run-unique values to one to three of
//!   its group's lists (a list is stored as `1,2,3`); checked for cycles
//!   in the manner of Elle (`txn_checker`).

use crate::history::{Mop, OpKind, Outcome, Step};
use kv_client::{ClientError, Key, ShoalClient, Transaction, TxnOptions};
use rand::Rng;
use std::time::Duration;

pub const ACCOUNTS: u32 = 10;
pub const INITIAL_BALANCE: i64 = 100;
pub const LIST_KEYS: u32 = 4;
pub const TXNS_PER_GROUP: u64 = 500;

fn bank_routing(prefix: &str) -> String {
    format!("{prefix}/bank")
}

fn account(prefix: &str, i: u32) -> Key {
    let routing = bank_routing(prefix);
    Key::routed(routing.clone(), format!("{routing}/acct-{i:02}"))
}

/// Writes every account's initial balance, in one transaction, retried
/// until it commits (the cluster may still be settling).
pub async fn setup_bank(client: &ShoalClient, prefix: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut txn = client.transaction();
        let mut attempt = Ok(());
        for i in 0..ACCOUNTS {
            if let Err(e) = txn.put(account(prefix, i), INITIAL_BALANCE.to_string()).await {
                attempt = Err(e);
                break;
            }
        }
        let attempt = match attempt {
            Ok(()) => txn.commit().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("bank setup: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => anyhow::bail!("bank setup never committed: {e}"),
        }
    }
}

/// How a transaction attempt ended, for the history: committed, surely
/// not applied (refused, conflicted, or failed before its commit was
/// sent), or unknown (the commit's answer never came).
fn outcome_of(result: &Result<(), ClientError>) -> (Outcome, Option<String>) {
    match result {
        Ok(()) => (Outcome::Ok, None),
        Err(e) if e.is_indeterminate() => (Outcome::Info, Some(e.to_string())),
        Err(e) => (Outcome::Fail, Some(e.to_string())),
    }
}

fn balance(value: Option<Vec<u8>>) -> Result<i64, ClientError> {
    match value {
        None => Ok(0),
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| ClientError::InvalidArgument(format!("balance {:?} is not a number", bytes))),
    }
}

/// One bank operation: a transfer or a read of every account.
pub async fn bank(client: &ShoalClient, prefix: &str, rng: &mut impl Rng) -> Step {
    let key = bank_routing(prefix);
    if rng.gen_bool(0.5) {
        let mut txn = client.transaction_with(TxnOptions {
            read_only: true,
            ..TxnOptions::default()
        });
        let keys = (0..ACCOUNTS).map(|i| account(prefix, i)).collect();
        let result = async {
            let values = txn.get_many(keys).await?;
            let balances = values.into_iter().map(balance).collect::<Result<Vec<_>, _>>()?;
            let committed = txn.commit().await?;
            Ok::<_, ClientError>((balances, committed.version))
        }
        .await;
        return match result {
            Ok((balances, version)) => (
                key,
                OpKind::BankRead {
                    balances: Some(balances),
                },
                Outcome::Ok,
                None,
                Some(version),
            ),
            Err(e) => {
                // A read-only transaction changes nothing, whatever became of it.
                (
                    key,
                    OpKind::BankRead { balances: None },
                    Outcome::Fail,
                    Some(e.to_string()),
                    None,
                )
            }
        };
    }
    let from = rng.gen_range(0..ACCOUNTS);
    let to = (from + rng.gen_range(1..ACCOUNTS)) % ACCOUNTS;
    let amount = rng.gen_range(1..=5);
    let mut txn = client.transaction();
    let mut version = None;
    let result = async {
        let payer = balance(txn.get(account(prefix, from)).await?)?;
        let payee = balance(txn.get(account(prefix, to)).await?)?;
        if payer < amount {
            txn.abort();
            return Err(ClientError::InvalidArgument("insufficient funds".into()));
        }
        txn.put(account(prefix, from), (payer - amount).to_string()).await?;
        txn.put(account(prefix, to), (payee + amount).to_string()).await?;
        version = Some(txn.commit().await?.version);
        Ok(())
    }
    .await;
    let (outcome, error) = outcome_of(&result);
    (key, OpKind::Transfer { from, to, amount }, outcome, error, version)
}

fn list_key(prefix: &str, group: u64, key: u32) -> Key {
    let routing = format!("{prefix}/la/{group}");
    Key::routed(routing.clone(), format!("{routing}/{key}"))
}

fn parse_list(value: Option<Vec<u8>>) -> Result<Vec<u64>, ClientError> {
    let Some(bytes) = value else { return Ok(Vec::new()) };
    let text = std::str::from_utf8(&bytes).map_err(|_| ClientError::InvalidArgument("list is not UTF-8".into()))?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    // A number nobody appended (u64::MAX) shows as garbage to the checker.
    Ok(text.split(',').map(|v| v.parse().unwrap_or(u64::MAX)).collect())
}

fn show_list(list: &[u64]) -> String {
    list.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// The micro-operations of one list-append transaction: one to three keys
/// of the group, each read, appended to, or read then appended to (the
/// pattern lost updates show in).
fn plan(rng: &mut impl Rng, n: u64) -> Vec<Mop> {
    let mut mops = Vec::new();
    let mut next_value = n * 8;
    for _ in 0..rng.gen_range(1..=3) {
        let key = rng.gen_range(0..LIST_KEYS);
        let mut append = |mops: &mut Vec<Mop>| {
            mops.push(Mop::Append { key, value: next_value });
            next_value += 1;
        };
        match rng.gen_range(0..3) {
            0 => mops.push(Mop::Read { key, list: None }),
            1 => append(&mut mops),
            _ => {
                mops.push(Mop::Read { key, list: None });
                append(&mut mops);
            }
        }
    }
    mops
}

async fn run_mops(txn: &mut Transaction<'_>, prefix: &str, group: u64, mops: &mut [Mop]) -> Result<u64, ClientError> {
    for mop in mops.iter_mut() {
        match mop {
            Mop::Read { key, list } => {
                *list = Some(parse_list(txn.get(list_key(prefix, group, *key)).await?)?);
            }
            Mop::Append { key, value } => {
                let key = list_key(prefix, group, *key);
                let mut current = parse_list(txn.get(key.clone()).await?)?;
                current.push(*value);
                txn.put(key, show_list(&current)).await?;
            }
        }
    }
    Ok(txn.commit().await?.version)
}

/// One list-append transaction.
pub async fn list_append(client: &ShoalClient, prefix: &str, rng: &mut impl Rng, n: u64) -> Step {
    let group = n / TXNS_PER_GROUP;
    let key = format!("{prefix}/la/{group}");
    let mut mops = plan(rng, n);
    let mut txn = client.transaction();
    let result = run_mops(&mut txn, prefix, group, &mut mops).await;
    let version = result.as_ref().ok().copied();
    let (outcome, error) = outcome_of(&result.map(|_| ()));
    if outcome != Outcome::Ok {
        // What an uncommitted transaction read tells nothing.
        for mop in &mut mops {
            if let Mop::Read { list, .. } = mop {
                *list = None;
            }
        }
    }
    (key, OpKind::Txn { mops }, outcome, error, version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn plans_use_unique_values_and_lists_round_trip() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut values = std::collections::BTreeSet::new();
        for n in 1..200 {
            for mop in plan(&mut rng, n) {
                if let Mop::Append { value, key } = mop {
                    assert!(values.insert(value), "value {value} twice");
                    assert!(key < LIST_KEYS);
                }
            }
        }
        assert_eq!(parse_list(Some(b"1,20,3".to_vec())).unwrap(), vec![1, 20, 3]);
        assert_eq!(parse_list(None).unwrap(), Vec::<u64>::new());
        assert_eq!(parse_list(Some(b"1,x".to_vec())).unwrap(), vec![1, u64::MAX]);
        assert_eq!(show_list(&[4, 5]), "4,5");
    }
}
