//! `ledgermesh channels`: an account's payment channels, as payer and as
//! payee, and the payer's close and withdraw.

use super::args::{ChannelsAction, ChannelsArgs};
use anyhow::Context as _;
use ledgermesh_ledger::payments::ChannelState;

fn parse_id(id: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(id.trim_start_matches("0x")).context("the channel id is not hex")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("a channel id is 32 bytes"))
}

fn json_of(
    c: &ChannelState,
    me: alloy::primitives::Address,
    latest: Option<u128>,
) -> serde_json::Value {
    // What the latest voucher we hold owes beyond what was claimed.
    let owed = latest.map(|v| v.min(c.deposit).saturating_sub(c.claimed).to_string());
    serde_json::json!({
        "latest_voucher": latest.map(|v| v.to_string()),
        "owed": owed,
        "channel": format!("0x{}", hex::encode(c.id)),
        "role": if c.payer == me { "payer" } else { "payee" },
        "payer": c.payer.to_string(),
        "payee": c.payee.to_string(),
        "deposit": c.deposit.to_string(),
        "claimed": c.claimed.to_string(),
        "remaining": (c.deposit - c.claimed).to_string(),
        "state": if c.closes_at.is_some() { "closing" } else { "open" },
        "closes_at": c.closes_at,
    })
}

pub(super) async fn run(args: ChannelsArgs) -> anyhow::Result<i32> {
    let key = crate::ledger_spec::ledger_key(args.ledger_key.as_deref())?
        .context("no account key: pass --ledger-key FILE or set LEDGERMESH_LEDGER_KEY")?;
    let chans = crate::ledger_spec::open_payments(&args.ledger, Some(&key)).await?;
    let me = chans.account().context("no account")?;
    let done = |what: &str, id: &str, cost: ledgermesh_ledger::payments::TxCost| {
        if args.json {
            crate::events::print_json_line(&serde_json::json!({
                "event": what, "channel": id, "tx": cost.tx, "gas_used": cost.gas_used,
            }));
        } else {
            println!("{what} {id} (gas {:?})", cost.gas_used);
        }
    };
    match &args.action {
        Some(ChannelsAction::Close { id }) => {
            let cost = chans.start_close(parse_id(id)?).await?;
            done("close_started", id, cost);
        }
        Some(ChannelsAction::Withdraw { id }) => {
            let cost = chans.finish_close(parse_id(id)?).await?;
            done("withdrawn", id, cost);
        }
        None => {
            let list = chans.channels_of(me).await?;
            let kept: std::collections::HashMap<[u8; 32], u128> = match &args.data_dir {
                Some(dir) => crate::protocols::pay::store::VoucherStore::open(dir)
                    .with_context(|| format!("reading the vouchers in {}", dir.display()))?
                    .1
                    .into_iter()
                    .map(|(_, v)| (v.channel, v.cumulative))
                    .collect(),
                None => Default::default(),
            };
            let latest = |c: &ChannelState| kept.get(&c.id).copied();
            if args.json {
                let v: Vec<_> = list.iter().map(|c| json_of(c, me, latest(c))).collect();
                crate::events::print_json_line(&serde_json::json!({
                    "event": "channels", "account": me.to_string(), "channels": v,
                }));
            } else {
                println!("account {me}: {} channel(s)", list.len());
                println!(
                    "{:<68} {:<6} {:>24} {:>24} {:>24} {:<8}",
                    "channel", "role", "deposit (wei)", "claimed (wei)", "owed (wei)", "state"
                );
                for c in &list {
                    let v = json_of(c, me, latest(c));
                    println!(
                        "{:<68} {:<6} {:>24} {:>24} {:>24} {:<8}",
                        v["channel"].as_str().unwrap_or(""),
                        v["role"].as_str().unwrap_or(""),
                        c.deposit,
                        c.claimed,
                        v["owed"].as_str().unwrap_or("-"),
                        v["state"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    Ok(0)
}
