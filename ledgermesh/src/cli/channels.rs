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

/// `channels report`: the payments report of a running node's API.
async fn report(api: &str, token: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let v = super::status::get_json(api, token, "/api/v1/payments").await?;
    if json {
        ledgermesh_node::events::print_json_line(&v);
        return Ok(0);
    }
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("-").to_string();
    let payee = v["as_payee"].as_array().cloned().unwrap_or_default();
    println!("paid on {} channel(s) (wei)", payee.len());
    println!(
        "{:<68} {:>12} {:>22} {:>22} {:>22} {:>20} {:>20} {:<7}",
        "channel", "bytes", "owed", "highest voucher", "claimed", "unclaimed", "unpaid", "state"
    );
    for c in &payee {
        println!(
            "{:<68} {:>12} {:>22} {:>22} {:>22} {:>20} {:>20} {:<7}",
            s(c, "channel"),
            c["bytes"].as_u64().unwrap_or(0),
            s(c, "owed_wei"),
            s(c, "highest_voucher_wei"),
            s(c, "claimed_wei"),
            s(c, "unclaimed_wei"),
            s(c, "unpaid_wei"),
            s(c, "state"),
        );
        for claim in c["claims"].as_array().into_iter().flatten() {
            println!(
                "    claim {} wei  tx {}  gas {}",
                s(claim, "amount_wei"),
                claim["tx"].as_str().unwrap_or("-"),
                claim["gas_used"]
                    .as_u64()
                    .map_or("-".into(), |g| g.to_string()),
            );
        }
    }
    let payer = v["as_payer"].as_array().cloned().unwrap_or_default();
    println!("paying {} payee(s) (wei)", payer.len());
    println!(
        "{:<68} {:>12} {:>22} {:>22} {:>22}",
        "channel", "bytes", "measured", "highest voucher", "held by payee"
    );
    for p in &payer {
        println!(
            "{:<68} {:>12} {:>22} {:>22} {:>22}",
            s(p, "channel"),
            p["bytes"].as_u64().unwrap_or(0),
            s(p, "measured_wei"),
            s(p, "highest_voucher_wei"),
            s(p, "held_by_payee_wei"),
        );
    }
    Ok(0)
}

pub(super) async fn run(args: ChannelsArgs) -> anyhow::Result<i32> {
    if let Some(ChannelsAction::Report { api, api_token }) = &args.action {
        return report(api, api_token.as_deref(), args.json).await;
    }
    let ledger = (args.ledger.as_deref())
        .context("no ledger: pass --ledger SPEC or set LEDGERMESH_LEDGER")?;
    let key = ledgermesh_node::ledger_spec::ledger_key(args.ledger_key.as_deref())?
        .context("no account key: pass --ledger-key FILE or set LEDGERMESH_LEDGER_KEY")?;
    let chans = ledgermesh_node::ledger_spec::open_payments(ledger, Some(&key)).await?;
    let me = chans.account().context("no account")?;
    let done = |what: &str, id: &str, cost: ledgermesh_ledger::payments::TxCost| {
        if args.json {
            ledgermesh_node::events::print_json_line(&serde_json::json!({
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
        Some(ChannelsAction::Report { .. }) => unreachable!("answered above"),
        None => {
            let list = chans.channels_of(me).await?;
            let kept: std::collections::HashMap<[u8; 32], u128> = match &args.data_dir {
                Some(dir) => ledgermesh_node::protocols::pay::store::VoucherStore::open(dir)
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
                ledgermesh_node::events::print_json_line(&serde_json::json!({
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
