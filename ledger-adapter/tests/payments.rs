//! Payment channels: the conformance suite against the in-memory chain and
//! against the contract on anvil (deployed by SignalBoard and found from the
//! board's spec), gas per call, and the committed artifact.

mod common;

use alloy::primitives::U256;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use ledgermesh_ledger::evm::EvmLedger;
use ledgermesh_ledger::payments::evm::{onchain::PaymentChannels, PAYMENT_CHANNELS_ARTIFACT};
use ledgermesh_ledger::payments::{conformance, EvmPayments, MemoryChain, PaymentChannels as _};
use std::time::Duration;

fn memory() -> (
    MemoryChain,
    [ledgermesh_ledger::payments::MemoryPayments; 3],
) {
    let chain = MemoryChain::new();
    let handles = [(); 3].map(|_| {
        let key = PrivateKeySigner::random();
        chain.fund(key.address(), 1_000_000);
        chain.account(key)
    });
    (chain, handles)
}

#[tokio::test]
async fn memory_vouchers_pay_the_payee_and_nothing_else() {
    let (_, [payer, payee, stranger]) = memory();
    conformance::vouchers_pay_the_payee_and_nothing_else(&payer, &payee, &stranger).await;
}

#[tokio::test]
async fn memory_a_close_waits_for_the_payee_then_refunds() {
    let (chain, [payer, payee, _]) = memory();
    let clock = chain.clone();
    let advance = move |secs: u64| -> ledgermesh_ledger::BoxFuture<'static, ()> {
        clock.advance(Duration::from_secs(secs));
        Box::pin(async {})
    };
    conformance::a_close_waits_for_the_payee_then_refunds(&payer, &payee, &advance).await;
    // Paid 250, then 100; everything else came back.
    assert_eq!(chain.balance(payer.account().unwrap()), 1_000_000 - 350);
    assert_eq!(chain.balance(payee.account().unwrap()), 1_000_000 + 350);
}

/// A chain with the board (and its payment contract), and three funded accounts.
async fn evm(test: &str) -> Option<(common::Anvil, String, [EvmPayments; 3])> {
    let chain = common::anvil(test).await?;
    let deployer = common::funded(&chain.url).await;
    let board = EvmLedger::deploy(&chain.url, deployer)
        .await
        .expect("deploy");
    let spec = format!("evm:{}@{board}", chain.url);
    let mut handles = vec![];
    for _ in 0..3 {
        let key = common::funded(&chain.url).await;
        handles.push(
            EvmPayments::connect(&spec, Some(key))
                .await
                .expect("connect"),
        );
    }
    let handles: [EvmPayments; 3] = handles.try_into().unwrap();
    Some((chain, spec, handles))
}

#[tokio::test]
async fn evm_vouchers_pay_the_payee_and_nothing_else() {
    let Some((_chain, _, [payer, payee, stranger])) = evm("evm_vouchers_pay").await else {
        return;
    };
    conformance::vouchers_pay_the_payee_and_nothing_else(&payer, &payee, &stranger).await;
}

#[tokio::test]
async fn evm_a_close_waits_for_the_payee_then_refunds() {
    let Some((chain, _, [payer, payee, _])) = evm("evm_close_waits").await else {
        return;
    };
    let url = chain.url.clone();
    let advance = move |secs: u64| -> ledgermesh_ledger::BoxFuture<'static, ()> {
        let url = url.clone();
        Box::pin(async move {
            let rpc = ProviderBuilder::new().connect_http(url.parse().unwrap());
            let _: serde_json::Value = rpc
                .raw_request("evm_increaseTime".into(), (secs,))
                .await
                .unwrap();
            let _: serde_json::Value = rpc.raw_request("evm_mine".into(), ()).await.unwrap();
        })
    };
    conformance::a_close_waits_for_the_payee_then_refunds(&payer, &payee, &advance).await;
}

/// The money moves on chain as the channel says: the payee's balance grows
/// by what it claimed less its gas; gas per call is printed.
#[tokio::test]
async fn evm_amounts_and_gas_per_call() {
    let Some((chain, _, [payer, payee, _])) = evm("evm_amounts_and_gas").await else {
        return;
    };
    let rpc = ProviderBuilder::new().connect_http(chain.url.parse().unwrap());
    let payee_addr = payee.account().unwrap();
    let (id, open) = payer.open(payee_addr, 10u128.pow(18)).await.unwrap();
    let top = payer.top_up(id, 10u128.pow(17)).await.unwrap();
    let held = rpc.get_balance(payer.contract()).await.unwrap();
    assert_eq!(
        held,
        U256::from(11u128 * 10u128.pow(17)),
        "the contract holds the deposit"
    );
    let before = rpc.get_balance(payee_addr).await.unwrap();
    let v = payer.sign(id, 3 * 10u128.pow(17)).unwrap();
    let (amount, claim) = payee.claim(v).await.unwrap();
    assert_eq!(amount, 3 * 10u128.pow(17));
    let after = rpc.get_balance(payee_addr).await.unwrap();
    let receipt = rpc
        .get_transaction_receipt(claim.tx.as_deref().unwrap().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let gas_paid = U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price);
    assert_eq!(
        after + gas_paid - before,
        U256::from(amount),
        "paid to the wei"
    );
    let start = payer.start_close(id).await.unwrap();
    let v = payer.sign(id, 4 * 10u128.pow(17)).unwrap();
    let close = payee.claim_and_close(id, Some(v)).await.unwrap();
    assert_eq!(rpc.get_balance(payer.contract()).await.unwrap(), U256::ZERO);
    for (what, c) in [
        ("open", &open),
        ("top-up", &top),
        ("claim", &claim),
        ("start close", &start),
        ("claim and close", &close),
    ] {
        println!("gas {what}: {}", c.gas_used.unwrap());
        assert!(c.gas_used.unwrap() > 21_000);
    }
}

#[test]
fn the_payment_binding_matches_the_committed_abi() {
    use alloy::json_abi::JsonAbi;
    use alloy::sol_types::{SolCall, SolEvent};
    let v: serde_json::Value = serde_json::from_str(PAYMENT_CHANNELS_ARTIFACT).unwrap();
    let abi: JsonAbi = serde_json::from_value(v["abi"].clone()).unwrap();
    assert_eq!(
        abi.event("Opened").unwrap()[0].selector(),
        PaymentChannels::Opened::SIGNATURE_HASH
    );
    assert_eq!(
        abi.event("Claimed").unwrap()[0].selector(),
        PaymentChannels::Claimed::SIGNATURE_HASH
    );
    for (name, sel) in [
        ("open", PaymentChannels::openCall::SELECTOR),
        ("topUp", PaymentChannels::topUpCall::SELECTOR),
        ("claim", PaymentChannels::claimCall::SELECTOR),
        (
            "claimAndClose",
            PaymentChannels::claimAndCloseCall::SELECTOR,
        ),
        ("startClose", PaymentChannels::startCloseCall::SELECTOR),
        ("finishClose", PaymentChannels::finishCloseCall::SELECTOR),
        ("channels", PaymentChannels::channelsCall::SELECTOR),
    ] {
        assert_eq!(abi.function(name).unwrap()[0].selector(), sel, "{name}");
    }
}
