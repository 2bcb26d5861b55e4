//! `shoal txn`: one transaction, its commands read from standard input one
//! a line, each read's result printed as it goes (docs/transactions.md).
//!
//! From a pipe every problem ends the run: a line that is not a command
//! exits 2, a refused command or a conflict exits 1, and nothing of the
//! transaction is applied unless `commit` printed `COMMITTED`. Typed at a
//! terminal, a mistake is reported and the transaction goes on.

use crate::{client_config, Cli};
use anyhow::{anyhow, bail};
use kv_client::{Key, ShoalClient, SnapshotReads, Transaction, TxnOptions};
use std::io::{BufRead, IsTerminal, Write};

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Get(String),
    Put(String, String),
    Del(String),
    Incr(String, i64),
    Scan(String),
    Commit,
    Abort,
}

const HELP: &str = "commands: get KEY | put KEY VALUE | del KEY | incr KEY N | scan PREFIX | commit | abort";

/// Parses one line; blank lines and `#` comments are None.
fn parse_line(line: &str) -> Result<Option<Step>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim_start();
    let one_key = |what: &str| -> Result<String, String> {
        match rest.split_whitespace().collect::<Vec<_>>().as_slice() {
            [key] => Ok(key.to_string()),
            _ => Err(format!("{what} takes one KEY")),
        }
    };
    let step = match word.to_ascii_lowercase().as_str() {
        "get" => Step::Get(one_key("get")?),
        "del" | "delete" => Step::Del(one_key("del")?),
        "put" => {
            // The value is the rest of the line, spaces and all.
            let (key, value) = rest
                .split_once(char::is_whitespace)
                .ok_or_else(|| "put takes KEY VALUE".to_string())?;
            Step::Put(key.to_string(), value.trim_start().to_string())
        }
        "incr" => match rest.split_whitespace().collect::<Vec<_>>().as_slice() {
            [key] => Step::Incr(key.to_string(), 1),
            [key, delta] => Step::Incr(
                key.to_string(),
                delta
                    .parse()
                    .map_err(|_| format!("incr: {delta:?} is not a 64-bit integer"))?,
            ),
            _ => return Err("incr takes KEY [N]".into()),
        },
        "scan" => match rest.split_whitespace().collect::<Vec<_>>().as_slice() {
            [] => Step::Scan(String::new()),
            [prefix] => Step::Scan(prefix.to_string()),
            _ => return Err("scan takes one PREFIX".into()),
        },
        "commit" if rest.is_empty() => Step::Commit,
        "abort" | "rollback" if rest.is_empty() => Step::Abort,
        "commit" | "abort" | "rollback" => return Err(format!("{word} takes nothing after it")),
        _ => return Err(format!("unknown command {word:?}; {HELP}")),
    };
    Ok(Some(step))
}

/// How the run goes on after a line.
enum After {
    Continue,
    Finished,
}

pub struct Options<'a> {
    pub routing: Option<&'a str>,
    pub strong: bool,
    pub read_only: bool,
    /// Entries a `scan` prints at most.
    pub scan_limit: usize,
}

pub async fn run(cli: &Cli, options: Options<'_>) -> anyhow::Result<()> {
    let client = ShoalClient::connect(client_config(cli)?).await?;
    let mut txn = client.transaction_with(TxnOptions {
        snapshot: if options.strong {
            SnapshotReads::Strong
        } else {
            TxnOptions::default().snapshot
        },
        read_only: options.read_only,
        // A person types slowly: the server's window is what bounds it.
        max_duration: std::time::Duration::from_secs(3600),
        ..TxnOptions::default()
    });
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("{HELP}");
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut number = 0usize;
    loop {
        if interactive {
            eprint!("txn> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| anyhow!("reading standard input: {e}"))?;
        number += 1;
        let step = match parse_line(&line) {
            Ok(Some(step)) => step,
            Ok(None) => continue,
            Err(why) if interactive => {
                eprintln!("{why}");
                continue;
            }
            Err(why) => {
                eprintln!("error: line {number}: {why}");
                // A usage mistake: exit 2, nothing was committed.
                std::process::exit(2);
            }
        };
        match execute(&mut txn, &options, step, interactive).await {
            Ok(After::Continue) => {}
            Ok(After::Finished) => {
                // Anything after commit or abort is an error, not a new
                // transaction: one run, one transaction.
                for rest in lines.by_ref() {
                    if let Ok(Some(step)) = parse_line(&rest?) {
                        bail!("{step:?} after the transaction finished (TXN_FINISHED)");
                    }
                }
                return Ok(());
            }
            Err(e) if interactive && txn.is_open() => eprintln!("error: {e:#}"),
            // A person sees the line they typed; a script is told which.
            Err(e) if interactive => return Err(e),
            Err(e) => return Err(e.context(format!("line {number}"))),
        }
    }
    if txn.is_open() {
        txn.abort();
        eprintln!("end of input without commit: aborted, nothing applied");
    }
    Ok(())
}

async fn execute(
    txn: &mut Transaction<'_>,
    options: &Options<'_>,
    step: Step,
    interactive: bool,
) -> anyhow::Result<After> {
    let key = |key: String| match options.routing {
        Some(routing) => Key::routed(routing, key),
        None => Key::from(key),
    };
    let note = |text: &str| {
        if interactive {
            eprintln!("{text}");
        }
    };
    match step {
        Step::Get(name) => match txn.get(key(name.clone())).await? {
            Some(value) => println!("{name}\t{}", String::from_utf8_lossy(&value)),
            None => println!("{name}\t(absent)"),
        },
        Step::Put(name, value) => {
            txn.put(key(name), value).await?;
            note("buffered");
        }
        Step::Del(name) => {
            txn.delete(key(name)).await?;
            note("buffered");
        }
        Step::Incr(name, delta) => {
            let value = txn.increment(key(name.clone()), delta).await?;
            println!("{name}\t{value}");
        }
        Step::Scan(prefix) => {
            let Some(routing) = options.routing else {
                bail!("scan in a transaction reads one μshard: give --routing");
            };
            let entries = txn
                .scan_prefix(routing.as_bytes(), prefix.as_bytes(), options.scan_limit)
                .await?;
            for (name, value) in entries {
                println!(
                    "{}\t{}",
                    String::from_utf8_lossy(&name),
                    String::from_utf8_lossy(&value)
                );
            }
        }
        Step::Commit => {
            let committed = txn.commit().await?;
            println!("COMMITTED version={}", committed.version);
            return Ok(After::Finished);
        }
        Step::Abort => {
            txn.abort();
            println!("ABORTED");
            return Ok(After::Finished);
        }
    }
    Ok(After::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_to_steps_and_values_keep_their_spaces() {
        assert_eq!(parse_line("get a"), Ok(Some(Step::Get("a".into()))));
        assert_eq!(
            parse_line("put a hello  world "),
            Ok(Some(Step::Put("a".into(), "hello  world".into())))
        );
        assert_eq!(parse_line("  INCR n -3"), Ok(Some(Step::Incr("n".into(), -3))));
        assert_eq!(parse_line("incr n"), Ok(Some(Step::Incr("n".into(), 1))));
        assert_eq!(parse_line("scan"), Ok(Some(Step::Scan(String::new()))));
        assert_eq!(parse_line("commit"), Ok(Some(Step::Commit)));
        assert_eq!(parse_line("# a comment"), Ok(None));
        assert_eq!(parse_line(""), Ok(None));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        for (line, says) in [
            ("frob a", "unknown command"),
            ("get", "get takes one KEY"),
            ("get a b", "get takes one KEY"),
            ("put a", "put takes KEY VALUE"),
            ("incr n x", "not a 64-bit integer"),
            ("commit now", "takes nothing"),
        ] {
            let why = parse_line(line).unwrap_err();
            assert!(why.contains(says), "{line:?}: {why}");
        }
    }
}
