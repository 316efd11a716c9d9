//! Vouchers: a payer's EIP-712 signature over a channel and the cumulative
//! amount it owes on it, bound to one chain and one contract. The same
//! check runs off chain (here) and on chain (`PaymentChannels.sol`).

use super::{ChannelId, Domain, Wei};
use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol_types::SolStruct;

alloy::sol! {
    /// The EIP-712 type a payer signs (`PaymentChannels.VOUCHER_TYPEHASH`).
    struct Voucher {
        bytes32 channelId;
        uint128 cumulativeAmount;
    }

    /// What a payer signs to say a channel pays for one libp2p peer
    /// (off chain only: a payee checks it before extending credit).
    struct Binding {
        bytes32 channelId;
        bytes peerId;
    }
}

/// A signed voucher: what the payer owes on `channel`, in all, so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedVoucher {
    /// The channel.
    pub channel: ChannelId,
    /// Everything owed on it so far (never decreases).
    pub cumulative: Wei,
    /// The payer's signature: r ‖ s ‖ v, v 27 or 28, s in the lower half.
    pub signature: [u8; 65],
}

/// Why a voucher is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoucherError {
    /// The signature does not parse, or is malleable (high s, odd v).
    #[error("malformed or malleable signature")]
    Malformed,
    /// Signed by someone other than the channel's payer (or for another
    /// channel, chain or contract: the recovered signer differs then too).
    #[error("signed by {signer}, not the payer {payer}")]
    WrongSigner {
        /// Who signed.
        signer: Address,
        /// Who should have.
        payer: Address,
    },
}

fn eip712_domain(d: &Domain) -> alloy::sol_types::Eip712Domain {
    alloy::sol_types::eip712_domain! {
        name: "ledgermesh-payments",
        version: "1",
        chain_id: d.chain_id,
        verifying_contract: d.contract,
    }
}

/// The digest signed for `cumulative` on `channel` in `domain`.
pub fn digest(domain: &Domain, channel: ChannelId, cumulative: Wei) -> B256 {
    let v = Voucher {
        channelId: B256::from(channel),
        cumulativeAmount: cumulative,
    };
    v.eip712_signing_hash(&eip712_domain(domain))
}

/// The payer's signature binding `channel` to the libp2p peer `peer_id`
/// (its bytes), so no other peer can present the channel as its own.
pub fn sign_binding(
    key: &PrivateKeySigner,
    domain: &Domain,
    channel: ChannelId,
    peer_id: &[u8],
) -> [u8; 65] {
    let b = Binding {
        channelId: B256::from(channel),
        peerId: peer_id.to_vec().into(),
    };
    let hash = b.eip712_signing_hash(&eip712_domain(domain));
    let sig = key
        .sign_hash_sync(&hash)
        .expect("a local key signs any digest");
    sig.normalized_s().as_bytes()
}

/// Checks that `payer` bound `channel` to `peer_id`.
pub fn verify_binding(
    domain: &Domain,
    channel: ChannelId,
    peer_id: &[u8],
    signature: &[u8; 65],
    payer: Address,
) -> Result<(), VoucherError> {
    let b = Binding {
        channelId: B256::from(channel),
        peerId: peer_id.to_vec().into(),
    };
    recover(
        signature,
        b.eip712_signing_hash(&eip712_domain(domain)),
        payer,
    )
}

/// The signer of `signature` over `hash` must be `payer`; malleable and
/// malformed signatures are refused.
fn recover(signature: &[u8; 65], hash: B256, payer: Address) -> Result<(), VoucherError> {
    let vbyte = signature[64];
    if vbyte != 27 && vbyte != 28 {
        return Err(VoucherError::Malformed);
    }
    let sig = alloy::primitives::Signature::from_raw_array(signature)
        .map_err(|_| VoucherError::Malformed)?;
    if sig.normalize_s().is_some() {
        return Err(VoucherError::Malformed);
    }
    let signer = sig
        .recover_address_from_prehash(&hash)
        .map_err(|_| VoucherError::Malformed)?;
    if signer != payer {
        return Err(VoucherError::WrongSigner { signer, payer });
    }
    Ok(())
}

/// Signs a voucher with the payer's key.
pub fn sign(
    key: &PrivateKeySigner,
    domain: &Domain,
    channel: ChannelId,
    cumulative: Wei,
) -> SignedVoucher {
    let sig = key
        .sign_hash_sync(&digest(domain, channel, cumulative))
        .expect("a local key signs any digest");
    // k256 signs low-s already; normalise anyway so the contract accepts it.
    let sig = sig.normalized_s();
    SignedVoucher {
        channel,
        cumulative,
        signature: sig.as_bytes(),
    }
}

/// Checks that `payer` signed `v` for this `domain`.
pub fn verify(domain: &Domain, v: &SignedVoucher, payer: Address) -> Result<(), VoucherError> {
    recover(&v.signature, digest(domain, v.channel, v.cumulative), payer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> Domain {
        Domain {
            chain_id: 31337,
            contract: Address::repeat_byte(0x11),
        }
    }

    #[test]
    fn a_voucher_verifies_for_its_payer_channel_chain_and_contract_only() {
        let payer = PrivateKeySigner::random();
        let v = sign(&payer, &domain(), [1; 32], 1_000);
        assert_eq!(verify(&domain(), &v, payer.address()), Ok(()));
        let other = PrivateKeySigner::random();
        assert!(matches!(
            verify(&domain(), &v, other.address()),
            Err(VoucherError::WrongSigner { .. })
        ));
        // The same signature for another amount, channel, chain or contract.
        let mut more = v.clone();
        more.cumulative = 2_000;
        assert!(verify(&domain(), &more, payer.address()).is_err());
        let mut elsewhere = v.clone();
        elsewhere.channel = [2; 32];
        assert!(verify(&domain(), &elsewhere, payer.address()).is_err());
        let chain = Domain {
            chain_id: 1,
            ..domain()
        };
        assert!(verify(&chain, &v, payer.address()).is_err());
        let contract = Domain {
            contract: Address::repeat_byte(0x22),
            ..domain()
        };
        assert!(verify(&contract, &v, payer.address()).is_err());
    }

    #[test]
    fn a_binding_ties_a_channel_to_one_peer() {
        let payer = PrivateKeySigner::random();
        let sig = sign_binding(&payer, &domain(), [3; 32], b"peer-a");
        let ok = verify_binding(&domain(), [3; 32], b"peer-a", &sig, payer.address());
        assert_eq!(ok, Ok(()));
        assert!(verify_binding(&domain(), [3; 32], b"peer-b", &sig, payer.address()).is_err());
        assert!(verify_binding(&domain(), [4; 32], b"peer-a", &sig, payer.address()).is_err());
        let other = PrivateKeySigner::random();
        assert!(verify_binding(&domain(), [3; 32], b"peer-a", &sig, other.address()).is_err());
    }

    #[test]
    fn a_malleable_twin_is_refused() {
        let payer = PrivateKeySigner::random();
        let v = sign(&payer, &domain(), [1; 32], 5);
        // (r, n - s, flipped v) recovers the same signer: refuse it.
        let mut bad = v.clone();
        bad.signature = crate::payments::conformance::malleable_twin(&v.signature);
        assert_eq!(
            verify(&domain(), &bad, payer.address()),
            Err(VoucherError::Malformed)
        );
        bad.signature = v.signature;
        bad.signature[64] = 1;
        assert_eq!(
            verify(&domain(), &bad, payer.address()),
            Err(VoucherError::Malformed)
        );
    }
}
