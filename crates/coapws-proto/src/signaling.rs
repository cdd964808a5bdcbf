//! RFC 8323 §5 signaling messages (codes 7.xx): CSM, Ping, Pong, Release, Abort.
//!
//! Signaling options are numbered per code; [`Signal::parse`] interprets them, rejecting
//! unknown critical options as §5.3 requires and ignoring unknown elective ones.
//! [`PeerSettings`] accumulates what a peer's CSMs said (§5.3.1: later CSMs update earlier ones).

use crate::code::Code;
use crate::message::{Message, Token};
use crate::option::{OptionNumber, decode_uint, encode_uint};
use bytes::Bytes;

/// CSM option 2: Max-Message-Size (uint, base value 1152).
pub const CSM_MAX_MESSAGE_SIZE: OptionNumber = OptionNumber(2);
/// CSM option 4: Block-Wise-Transfer (empty).
pub const CSM_BLOCK_WISE_TRANSFER: OptionNumber = OptionNumber(4);
/// CSM option 6: Extended-Token-Length (uint, RFC 8974, base value 8).
pub const CSM_EXTENDED_TOKEN_LENGTH: OptionNumber = OptionNumber(6);
/// Ping/Pong option 2: Custody (empty).
pub const PING_CUSTODY: OptionNumber = OptionNumber(2);
/// Release option 2: Alternative-Address (string, repeatable).
pub const RELEASE_ALTERNATIVE_ADDRESS: OptionNumber = OptionNumber(2);
/// Release option 4: Hold-Off (uint seconds).
pub const RELEASE_HOLD_OFF: OptionNumber = OptionNumber(4);
/// Abort option 2: Bad-CSM-Option (uint).
pub const ABORT_BAD_CSM_OPTION: OptionNumber = OptionNumber(2);

/// Max-Message-Size a peer is assumed to accept before its CSM says otherwise (§5.3.1).
pub const BASE_MAX_MESSAGE_SIZE: u32 = 1152;
/// Token length a peer is assumed to accept without Extended-Token-Length (RFC 8974).
pub const BASE_MAX_TOKEN_LEN: u32 = 8;
/// Largest token RFC 8974 framing can carry.
pub const MAX_EXTENDED_TOKEN_LEN: u32 = 65804;

/// A parsed signaling message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// 7.01 Capabilities and Settings Message.
    Csm(Csm),
    /// 7.02 Ping; `custody` asks for the Pong after earlier requests are answered.
    Ping {
        /// Custody option present.
        custody: bool,
    },
    /// 7.03 Pong.
    Pong {
        /// Custody option present.
        custody: bool,
    },
    /// 7.04 Release: the sender wants the connection closed.
    Release {
        /// Where to reconnect, if the sender said.
        alternative_addresses: Vec<String>,
        /// Seconds to wait before reconnecting.
        hold_off: Option<u32>,
    },
    /// 7.05 Abort: the sender closes the connection at once.
    Abort {
        /// The CSM option that caused the abort, if any.
        bad_csm_option: Option<u16>,
        /// Diagnostic payload.
        diagnostic: String,
    },
}

/// The options of one CSM; absent options leave earlier settings unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Csm {
    /// Max-Message-Size.
    pub max_message_size: Option<u32>,
    /// Block-Wise-Transfer present.
    pub block_wise_transfer: bool,
    /// Extended-Token-Length.
    pub extended_token_length: Option<u32>,
}

/// Why a signaling message is not acceptable: each is a reason to Abort (§5.3, §5.6).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// A 7.xx code that RFC 8323 does not assign.
    #[error("unassigned signaling code {0}")]
    UnknownCode(Code),
    /// An unknown critical option.
    #[error("unknown critical option {option} in {code}")]
    UnknownCritical {
        /// The signaling code.
        code: Code,
        /// The option number.
        option: u16,
    },
    /// A known option with a value of the wrong format.
    #[error("bad value for option {option} in {code}")]
    BadValue {
        /// The signaling code.
        code: Code,
        /// The option number.
        option: u16,
    },
}

/// The smallest Max-Message-Size a CSM may announce: room for a header, an 8-byte token,
/// the block-wise options and a 16-byte block. A peer announcing less could receive no
/// answer at all; its CSM is refused (Abort with Bad-CSM-Option 2).
pub const MIN_MAX_MESSAGE_SIZE: u32 = 64;

impl SignalError {
    /// The option to name in an Abort's Bad-CSM-Option, for problems with a CSM.
    pub fn bad_csm_option(&self) -> Option<u16> {
        match self {
            SignalError::UnknownCritical { code, option }
            | SignalError::BadValue { code, option }
                if *code == Code::CSM =>
            {
                Some(*option)
            }
            _ => None,
        }
    }
}

fn uint_opt(code: Code, n: OptionNumber, v: &[u8], max_len: usize) -> Result<u32, SignalError> {
    match decode_uint(v) {
        Some(x) if v.len() <= max_len => Ok(x),
        _ => Err(SignalError::BadValue { code, option: n.0 }),
    }
}

fn empty_opt(code: Code, n: OptionNumber, v: &[u8]) -> Result<bool, SignalError> {
    if v.is_empty() {
        Ok(true)
    } else {
        Err(SignalError::BadValue { code, option: n.0 })
    }
}

impl Signal {
    /// Interprets a 7.xx message.
    pub fn parse(m: &Message) -> Result<Signal, SignalError> {
        let code = m.code;
        let unknown = |n: OptionNumber| -> Result<(), SignalError> {
            if n.is_critical() {
                Err(SignalError::UnknownCritical { code, option: n.0 })
            } else {
                Ok(())
            }
        };
        match code {
            Code::CSM => {
                let mut csm = Csm::default();
                for (n, v) in m.options.iter() {
                    match n {
                        CSM_MAX_MESSAGE_SIZE => {
                            let size = uint_opt(code, n, v, 4)?;
                            // Too small for any answer to fit (RFC 8323 sets no minimum; one
                            // below this would leave every request unanswered).
                            if size < MIN_MAX_MESSAGE_SIZE {
                                return Err(SignalError::BadValue { code, option: n.0 });
                            }
                            csm.max_message_size = Some(size)
                        }
                        CSM_BLOCK_WISE_TRANSFER => csm.block_wise_transfer = empty_opt(code, n, v)?,
                        CSM_EXTENDED_TOKEN_LENGTH => {
                            let len = uint_opt(code, n, v, 3)?;
                            if !(BASE_MAX_TOKEN_LEN..=MAX_EXTENDED_TOKEN_LEN).contains(&len) {
                                return Err(SignalError::BadValue { code, option: n.0 });
                            }
                            csm.extended_token_length = Some(len)
                        }
                        n => unknown(n)?,
                    }
                }
                Ok(Signal::Csm(csm))
            }
            Code::PING | Code::PONG => {
                let mut custody = false;
                for (n, v) in m.options.iter() {
                    match n {
                        PING_CUSTODY => custody = empty_opt(code, n, v)?,
                        n => unknown(n)?,
                    }
                }
                Ok(if code == Code::PING {
                    Signal::Ping { custody }
                } else {
                    Signal::Pong { custody }
                })
            }
            Code::RELEASE => {
                let mut alternative_addresses = Vec::new();
                let mut hold_off = None;
                for (n, v) in m.options.iter() {
                    match n {
                        RELEASE_ALTERNATIVE_ADDRESS => {
                            let s = std::str::from_utf8(v)
                                .map_err(|_| SignalError::BadValue { code, option: n.0 })?;
                            alternative_addresses.push(s.to_owned());
                        }
                        RELEASE_HOLD_OFF => hold_off = Some(uint_opt(code, n, v, 3)?),
                        n => unknown(n)?,
                    }
                }
                Ok(Signal::Release {
                    alternative_addresses,
                    hold_off,
                })
            }
            Code::ABORT => {
                let mut bad_csm_option = None;
                for (n, v) in m.options.iter() {
                    match n {
                        ABORT_BAD_CSM_OPTION => {
                            bad_csm_option = Some(uint_opt(code, n, v, 2)? as u16)
                        }
                        n => unknown(n)?,
                    }
                }
                Ok(Signal::Abort {
                    bad_csm_option,
                    diagnostic: m.payload_text().into_owned(),
                })
            }
            other => Err(SignalError::UnknownCode(other)),
        }
    }

    /// The message carrying this signal, with `token`.
    pub fn to_message(&self, token: Token) -> Message {
        let mut m = Message::new(self.code()).with_token(token);
        match self {
            Signal::Csm(csm) => {
                if let Some(v) = csm.max_message_size {
                    m.options.push(CSM_MAX_MESSAGE_SIZE, encode_uint(v));
                }
                if csm.block_wise_transfer {
                    m.options.push(CSM_BLOCK_WISE_TRANSFER, Bytes::new());
                }
                if let Some(v) = csm.extended_token_length {
                    m.options.push(CSM_EXTENDED_TOKEN_LENGTH, encode_uint(v));
                }
            }
            Signal::Ping { custody } | Signal::Pong { custody } => {
                if *custody {
                    m.options.push(PING_CUSTODY, Bytes::new());
                }
            }
            Signal::Release {
                alternative_addresses,
                hold_off,
            } => {
                for a in alternative_addresses {
                    m.options.push(
                        RELEASE_ALTERNATIVE_ADDRESS,
                        Bytes::copy_from_slice(a.as_bytes()),
                    );
                }
                if let Some(h) = hold_off {
                    m.options.push(RELEASE_HOLD_OFF, encode_uint(*h));
                }
            }
            Signal::Abort {
                bad_csm_option,
                diagnostic,
            } => {
                if let Some(o) = bad_csm_option {
                    m.options
                        .push(ABORT_BAD_CSM_OPTION, encode_uint(u32::from(*o)));
                }
                m.payload = Bytes::copy_from_slice(diagnostic.as_bytes());
            }
        }
        m
    }

    /// The code of this signal.
    pub fn code(&self) -> Code {
        match self {
            Signal::Csm(_) => Code::CSM,
            Signal::Ping { .. } => Code::PING,
            Signal::Pong { .. } => Code::PONG,
            Signal::Release { .. } => Code::RELEASE,
            Signal::Abort { .. } => Code::ABORT,
        }
    }
}

/// What a peer's CSMs have told us so far (§5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerSettings {
    /// Largest message the peer accepts.
    pub max_message_size: u32,
    /// The peer does block-wise transfer and so BERT when `max_message_size` > 1152 (§6).
    pub block_wise_transfer: bool,
    /// Longest token the peer accepts (RFC 8974).
    pub max_token_len: u32,
}

impl Default for PeerSettings {
    fn default() -> PeerSettings {
        PeerSettings {
            max_message_size: BASE_MAX_MESSAGE_SIZE,
            block_wise_transfer: false,
            max_token_len: BASE_MAX_TOKEN_LEN,
        }
    }
}

impl PeerSettings {
    /// Applies a CSM on top of the earlier settings.
    pub fn apply(&mut self, csm: &Csm) {
        if let Some(v) = csm.max_message_size {
            self.max_message_size = v;
        }
        if csm.block_wise_transfer {
            self.block_wise_transfer = true;
        }
        if let Some(v) = csm.extended_token_length {
            self.max_token_len = v;
        }
    }
    /// True when BERT (Block SZX 7) may be used towards this peer (§6).
    pub fn bert(&self) -> bool {
        self.block_wise_transfer && self.max_message_size > BASE_MAX_MESSAGE_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csm_round_trip_and_apply() {
        let csm = Csm {
            max_message_size: Some(1 << 20),
            block_wise_transfer: true,
            extended_token_length: None,
        };
        let m = Signal::Csm(csm.clone()).to_message(Token::EMPTY);
        assert_eq!(Signal::parse(&m), Ok(Signal::Csm(csm.clone())));
        let mut s = PeerSettings::default();
        assert!(!s.bert());
        s.apply(&csm);
        assert!(s.bert());
        // cumulative: a later CSM without options changes nothing
        s.apply(&Csm::default());
        assert_eq!(s.max_message_size, 1 << 20);
    }

    #[test]
    fn unknown_options() {
        let m = Message::new(Code::CSM).with_option(OptionNumber(11), Bytes::new());
        let e = Signal::parse(&m).unwrap_err();
        assert_eq!(e.bad_csm_option(), Some(11));
        let m = Message::new(Code::PING).with_option(OptionNumber(10), Bytes::new());
        assert_eq!(Signal::parse(&m), Ok(Signal::Ping { custody: false }));
        let m = Message::new(Code::new(7, 9));
        assert!(matches!(
            Signal::parse(&m),
            Err(SignalError::UnknownCode(_))
        ));
        let m = Message::new(Code::CSM).with_option(CSM_BLOCK_WISE_TRANSFER, vec![1]);
        assert!(matches!(
            Signal::parse(&m),
            Err(SignalError::BadValue { .. })
        ));
    }
}
