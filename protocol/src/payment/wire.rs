//! `/ledgermesh/pay/1` messages, typed and checked: every byte string has
//! its exact length, every amount parses, before anything acts on them.
//! Framed like the stream protocol (4-byte length, at most 4 KiB).

use super::{Terms, Wei};
use crate::framing::FrameError;
use ledgermesh_proto::v1 as pb;
use libp2p_identity::PeerId;
use prost::Message;

/// Why the other side refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalCode {
    /// No channel, or not to this payee.
    NoChannel,
    /// The deposit is below the payee's minimum.
    DepositTooLow,
    /// The binding is not the channel payer's.
    BadBinding,
    /// Signature, channel or domain wrong.
    BadVoucher,
    /// Replayed or lower.
    NotIncreasing,
    /// Above the deposit.
    OverDeposit,
    /// Cut after the grace period.
    Unpaid,
    /// (Payer) the invoice exceeds its meter.
    Overbilled,
    /// A message that does not decode.
    Malformed,
    /// The ledger did not answer.
    Unavailable,
    /// Anything else.
    Other,
}

impl RefusalCode {
    /// The code's name in events (`no_channel`, `unpaid`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoChannel => "no_channel",
            Self::DepositTooLow => "deposit_too_low",
            Self::BadBinding => "bad_binding",
            Self::BadVoucher => "bad_voucher",
            Self::NotIncreasing => "not_increasing",
            Self::OverDeposit => "over_deposit",
            Self::Unpaid => "unpaid",
            Self::Overbilled => "overbilled",
            Self::Malformed => "malformed",
            Self::Unavailable => "unavailable",
            Self::Other => "other",
        }
    }

    fn to_pb(self) -> pb::PayRefusal {
        use pb::PayRefusal as P;
        match self {
            Self::NoChannel => P::NoChannel,
            Self::DepositTooLow => P::DepositTooLow,
            Self::BadBinding => P::BadBinding,
            Self::BadVoucher => P::BadVoucher,
            Self::NotIncreasing => P::NotIncreasing,
            Self::OverDeposit => P::OverDeposit,
            Self::Unpaid => P::Unpaid,
            Self::Overbilled => P::Overbilled,
            Self::Malformed => P::Malformed,
            Self::Unavailable => P::Unavailable,
            Self::Other => P::Unspecified,
        }
    }

    fn from_pb(code: i32) -> Self {
        use pb::PayRefusal as P;
        match P::try_from(code) {
            Ok(P::NoChannel) => Self::NoChannel,
            Ok(P::DepositTooLow) => Self::DepositTooLow,
            Ok(P::BadBinding) => Self::BadBinding,
            Ok(P::BadVoucher) => Self::BadVoucher,
            Ok(P::NotIncreasing) => Self::NotIncreasing,
            Ok(P::OverDeposit) => Self::OverDeposit,
            Ok(P::Unpaid) => Self::Unpaid,
            Ok(P::Overbilled) => Self::Overbilled,
            Ok(P::Malformed) => Self::Malformed,
            Ok(P::Unavailable) => Self::Unavailable,
            _ => Self::Other,
        }
    }
}

/// The payee's terms, with where vouchers are valid and whom they pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// Prices, free allowance, minimum deposit.
    pub terms: Terms,
    /// The chain.
    pub chain_id: u64,
    /// The payment contract.
    pub contract: [u8; 20],
    /// The payee's account.
    pub payee: [u8; 20],
    /// The first credit window.
    pub credit: Wei,
}

/// One message of the payment protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayMsg {
    /// (Payer) what are your terms?
    Hello,
    /// (Payee) these.
    Terms(Offer),
    /// (Payer) this channel pays for me.
    Attach {
        /// The channel.
        channel: [u8; 32],
        /// The payer account's signature binding it to our PeerId.
        binding: [u8; 65],
    },
    /// (Payee) this much is owed in all.
    Invoice {
        /// Everything owed.
        owed: Wei,
        /// Bytes metered.
        bytes: u64,
    },
    /// (Payer) a voucher.
    Voucher {
        /// The channel.
        channel: [u8; 32],
        /// Everything owed, in all.
        cumulative: Wei,
        /// The payer account's signature.
        signature: [u8; 65],
    },
    /// (Payee) accepted: the highest paid, the credit now.
    Ack {
        /// Highest voucher accepted.
        paid: Wei,
        /// Credit extended.
        window: Wei,
        /// Owed in all (on an attach; else `paid`).
        owed: Wei,
        /// The signature of the voucher for `paid`, when one is held.
        voucher: Option<[u8; 65]>,
    },
    /// (Payer billed as a circuit's destination) the sources it pays for:
    /// `replace` starts the set again, else these are added.
    Consent {
        /// Start the set again.
        replace: bool,
        /// Every source.
        any: bool,
        /// These sources.
        peers: Vec<PeerId>,
    },
    /// Either side: no, and why.
    Refuse {
        /// The code.
        code: RefusalCode,
        /// For people.
        reason: String,
    },
}

/// Longest refusal reason kept.
const MAX_REASON: usize = 512;

/// Peers in one consent message (each about 40 bytes; a frame is 4 KiB).
pub const CONSENT_PER_MESSAGE: usize = 64;

fn amount(s: &str) -> Result<Wei, FrameError> {
    if s.is_empty() || s.len() > 39 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FrameError::Malformed(format!("bad amount {s:?}")));
    }
    s.parse()
        .map_err(|_| FrameError::Malformed(format!("bad amount {s:?}")))
}

fn exact<const N: usize>(b: &[u8], what: &str) -> Result<[u8; N], FrameError> {
    b.try_into()
        .map_err(|_| FrameError::Malformed(format!("{what}: {} bytes, not {N}", b.len())))
}

impl PayMsg {
    /// The framed bytes.
    pub fn encode(&self) -> Vec<u8> {
        use pb::pay_message::Kind;
        let kind = match self {
            Self::Hello => Kind::Hello(pb::PayHello {}),
            Self::Terms(o) => Kind::Terms(pb::PayTerms {
                price_per_mib: o.terms.price_per_mib.to_string(),
                price_per_hour: o.terms.price_per_hour.to_string(),
                free_bytes: o.terms.free_bytes,
                min_deposit: o.terms.min_deposit.to_string(),
                chain_id: o.chain_id,
                contract: o.contract.to_vec(),
                payee: o.payee.to_vec(),
                credit: o.credit.to_string(),
            }),
            Self::Attach { channel, binding } => Kind::Attach(pb::PayAttach {
                channel: channel.to_vec(),
                binding: binding.to_vec(),
            }),
            Self::Invoice { owed, bytes } => Kind::Invoice(pb::PayInvoice {
                owed: owed.to_string(),
                bytes: *bytes,
            }),
            Self::Voucher {
                channel,
                cumulative,
                signature,
            } => Kind::Voucher(pb::PayVoucher {
                channel: channel.to_vec(),
                cumulative: cumulative.to_string(),
                signature: signature.to_vec(),
            }),
            Self::Ack {
                paid,
                window,
                owed,
                voucher,
            } => Kind::Ack(pb::PayAck {
                paid: paid.to_string(),
                window: window.to_string(),
                owed: owed.to_string(),
                voucher: voucher.map(|v| v.to_vec()).unwrap_or_default(),
            }),
            Self::Consent {
                replace,
                any,
                peers,
            } => Kind::Consent(pb::PayConsent {
                replace: *replace,
                any: *any,
                peers: peers.iter().map(|p| p.to_bytes()).collect(),
            }),
            Self::Refuse { code, reason } => Kind::Refuse(pb::PayRefuse {
                code: code.to_pb() as i32,
                reason: reason.chars().take(MAX_REASON).collect(),
            }),
        };
        let body = pb::PayMessage { kind: Some(kind) }.encode_to_vec();
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a frame body (see [`crate::framing::split_frame`]).
    pub fn decode(body: &[u8]) -> Result<Self, FrameError> {
        use pb::pay_message::Kind;
        let msg = pb::PayMessage::decode(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
        Ok(match msg.kind.ok_or(FrameError::EmptyHeader)? {
            Kind::Hello(_) => Self::Hello,
            Kind::Terms(t) => Self::Terms(Offer {
                terms: Terms {
                    price_per_mib: amount(&t.price_per_mib)?,
                    price_per_hour: amount(&t.price_per_hour)?,
                    free_bytes: t.free_bytes,
                    min_deposit: amount(&t.min_deposit)?,
                },
                chain_id: t.chain_id,
                contract: exact(&t.contract, "contract")?,
                payee: exact(&t.payee, "payee")?,
                credit: amount(&t.credit)?,
            }),
            Kind::Attach(a) => Self::Attach {
                channel: exact(&a.channel, "channel")?,
                binding: exact(&a.binding, "binding")?,
            },
            Kind::Invoice(i) => Self::Invoice {
                owed: amount(&i.owed)?,
                bytes: i.bytes,
            },
            Kind::Voucher(v) => Self::Voucher {
                channel: exact(&v.channel, "channel")?,
                cumulative: amount(&v.cumulative)?,
                signature: exact(&v.signature, "signature")?,
            },
            Kind::Ack(a) => {
                let paid = amount(&a.paid)?;
                Self::Ack {
                    paid,
                    window: amount(&a.window)?,
                    owed: if a.owed.is_empty() {
                        paid
                    } else {
                        amount(&a.owed)?
                    },
                    voucher: match a.voucher.len() {
                        0 => None,
                        _ => Some(exact(&a.voucher, "voucher")?),
                    },
                }
            }
            Kind::Consent(c) => Self::Consent {
                replace: c.replace,
                any: c.any,
                peers: (c.peers.iter())
                    .map(|b| {
                        PeerId::from_bytes(b)
                            .map_err(|e| FrameError::Malformed(format!("consent: {e}")))
                    })
                    .collect::<Result<_, _>>()?,
            },
            Kind::Refuse(r) => Self::Refuse {
                code: RefusalCode::from_pb(r.code),
                reason: r.reason.chars().take(MAX_REASON).collect(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::split_frame;

    fn round_trip(m: PayMsg) {
        let bytes = m.encode();
        let (body, used) = split_frame(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(PayMsg::decode(body), Ok(m));
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(PayMsg::Hello);
        round_trip(PayMsg::Terms(Offer {
            terms: Terms {
                price_per_mib: u128::MAX,
                price_per_hour: 7,
                free_bytes: 1 << 20,
                min_deposit: 10u128.pow(18),
            },
            chain_id: 31337,
            contract: [1; 20],
            payee: [2; 20],
            credit: 5,
        }));
        round_trip(PayMsg::Attach {
            channel: [3; 32],
            binding: [4; 65],
        });
        round_trip(PayMsg::Invoice { owed: 9, bytes: 10 });
        round_trip(PayMsg::Voucher {
            channel: [5; 32],
            cumulative: 123,
            signature: [6; 65],
        });
        round_trip(PayMsg::Ack {
            paid: 1,
            window: 2,
            owed: 1,
            voucher: None,
        });
        round_trip(PayMsg::Ack {
            paid: 1,
            window: 2,
            owed: 3,
            voucher: Some([8; 65]),
        });
        round_trip(PayMsg::Refuse {
            code: RefusalCode::Unpaid,
            reason: "cut".into(),
        });
        round_trip(PayMsg::Consent {
            replace: true,
            any: false,
            peers: vec![PeerId::random(), PeerId::random()],
        });
    }

    #[test]
    fn wrong_lengths_and_bad_amounts_are_malformed() {
        let bad = pb::PayMessage {
            kind: Some(pb::pay_message::Kind::Voucher(pb::PayVoucher {
                channel: vec![0; 31],
                cumulative: "1".into(),
                signature: vec![0; 65],
            })),
        };
        assert!(PayMsg::decode(&bad.encode_to_vec()).is_err());
        for amount in [
            "",
            "-1",
            "1e9",
            "0x10",
            "340282366920938463463374607431768211456",
        ] {
            let m = pb::PayMessage {
                kind: Some(pb::pay_message::Kind::Invoice(pb::PayInvoice {
                    owed: amount.into(),
                    bytes: 0,
                })),
            };
            assert!(PayMsg::decode(&m.encode_to_vec()).is_err(), "{amount:?}");
        }
        assert_eq!(PayMsg::decode(&[]), Err(FrameError::EmptyHeader));
    }
}
