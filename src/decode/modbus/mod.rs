/*!
The `m`/`M` decoder: Modbus RTU (or Modbus TCP when the script gives an `[address]`) replies in,
readings out, and the meter's poll requests out on their schedule.

Tasmota sends the definition line's request blocks in turn, one per `txperiod` tick, and reads
whatever arrives as the reply to the block sent last; a metric line with `iN:` only reads the reply
to block N. This decoder does the same, and checks more before a value is published: the reply's
CRC, that it comes from the slave asked, answers the function asked and (for reads) carries the
number of bytes asked for; over TCP, that its transaction id is the request's. An exception reply,
a reply from another slave or to another request, a reply with nobody asking and a request left
unanswered until the next one goes out are each counted ([`ModbusStats`]) and logged, and publish
nothing. Without requests (a bus only listened to) every reply with a good CRC is read by the lines
without `iN:`. A decoder that has sent nothing reads a capture (`sml decode`): each reply answers
the next block in turn that it fits, blocks passed over counting as unanswered.

Two halves, each tested alone: [`frame`] finds and checks frames, [`crate::decode::bytes`] reads
the metric lines' masks; this module matches replies to requests between them.

Text captures (`@#`) publish nothing on a Modbus meter (Tasmota runs its SML value reader over the
reply there, which means nothing for Modbus).
A bus only listened to while another master polls it is not supported: its requests do not frame
as replies and are dropped as CRC errors.

The script's one-off requests (`sml(m 3 svar)`, e.g. a register write) are queued
([`Decoder::queue_request`]) and sent as soon as no poll waits for its reply (Tasmota sends one in
place of the next poll): polls wait up to [`QUEUED_REPLY_WAIT`] for its reply, which is checked like
any other (CRC, slave, function) but read by no metric line, so a write's echo never publishes as a
polled value.

Over RTU a late reply to block N that arrives after block N+1 went out to the same slave, with the
same function and length, cannot be told from the reply to N+1 (Tasmota has the same limit); over
TCP the transaction id tells them apart.
*/

pub mod frame;
pub mod request;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::decode::request::RequestSchedule;
use crate::decode::{DecodeError, DecodeEvent, DecodeStats, Decoder, Reading, Telegram, Value};
use crate::script::model::{BytePattern, Decoding, Meter, MeterIndex, MeterSource, Metric};

use frame::{Frame, RtuFramer, TcpFramer};

/// A quiet line for this long ends a partial frame (the rest will not come).
pub const SILENCE: Duration = Duration::from_millis(500);

/// How long the polls wait for the reply to a script's queued request.
pub const QUEUED_REPLY_WAIT: Duration = Duration::from_secs(1);

/// Queued requests kept for a link that cannot send them (a replay); the oldest goes first.
pub const MAX_QUEUED_REQUESTS: usize = 16;

/// The `block` of a queued request's [`Outstanding`]: no poll block, so no metric line reads it.
const QUEUED: usize = usize::MAX;

pub use crate::decode::MAX_QUEUED_EVENTS;

/// What only a Modbus master can tell wrong, beyond [`DecodeStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModbusStats {
    pub requests: u64,
    /// Exception replies (function code with bit 7 set).
    pub exceptions: u64,
    /// Replies from a slave other than the one asked.
    pub wrong_slave: u64,
    /// Replies from the slave asked, to another function, length or transaction.
    pub wrong_request: u64,
    /// Replies while no request was waiting for one.
    pub unsolicited: u64,
    /// Requests with no reply before the next request went out.
    pub no_reply: u64,
    /// The script's queued requests sent (`sml(m 3 svar)`), and the replies matched to them.
    pub queued_sent: u64,
    pub queued_replies: u64,
    /// Queued requests dropped past [`MAX_QUEUED_REQUESTS`].
    pub queued_dropped: u64,
}

/// The request a reply is waited for.
#[derive(Debug, Clone)]
struct Outstanding {
    block: usize,
    slave: u8,
    function: u8,
    /// Data bytes a read reply must carry (`None` for other functions).
    byte_count: Option<u8>,
    transaction: Option<u16>,
}

enum Transport {
    Rtu(RtuFramer),
    Tcp {
        framer: TcpFramer,
        next_transaction: u16,
    },
}

pub struct ModbusDecoder {
    meter: MeterIndex,
    transport: Transport,
    metrics: Vec<Metric<BytePattern>>,
    requests: RequestSchedule,
    outstanding: Option<Outstanding>,
    /// The request blocks (unit id + PDU first), to know what a reply in a capture answers.
    blocks: Vec<Vec<u8>>,
    /// False while the decoder has sent nothing: it reads a capture (`sml decode`), whose replies
    /// answer the blocks in turn.
    transmitted: bool,
    /// In a capture, the block the next reply is expected to answer.
    replay_next: usize,
    events: VecDeque<DecodeEvent>,
    stats: DecodeStats,
    modbus: ModbusStats,
    last_byte_at: Option<Instant>,
    /// The script's one-off requests (unit id + PDU), waiting for the line.
    queued: VecDeque<Vec<u8>>,
    /// When the queued request now waited for went out.
    queued_sent_at: Option<Instant>,
}

impl ModbusDecoder {
    pub fn new(meter: &Meter) -> Self {
        let metrics = match &meter.decoding {
            Decoding::Modbus(m) => m.clone(),
            _ => Vec::new(),
        };
        let transport = match meter.source {
            MeterSource::ModbusTcp { .. } => Transport::Tcp {
                framer: TcpFramer::default(),
                next_transaction: 1,
            },
            MeterSource::Pin(_) => Transport::Rtu(RtuFramer::default()),
        };
        ModbusDecoder {
            meter: meter.index,
            transport,
            metrics,
            requests: RequestSchedule::new(meter),
            outstanding: None,
            blocks: crate::decode::request::frame(meter),
            transmitted: false,
            replay_next: 0,
            events: VecDeque::new(),
            stats: DecodeStats::default(),
            modbus: ModbusStats::default(),
            last_byte_at: None,
            queued: VecDeque::new(),
            queued_sent_at: None,
        }
    }

    pub fn modbus_stats(&self) -> ModbusStats {
        self.modbus
    }

    /// Run the framer with a sink that turns frames into events.
    fn with_frames(&mut self, f: impl FnOnce(&mut Transport, &mut dyn FnMut(Frame<'_>))) {
        let ModbusDecoder {
            meter,
            transport,
            metrics,
            outstanding,
            events,
            stats,
            modbus,
            requests,
            blocks,
            transmitted,
            replay_next,
            ..
        } = self;
        // A queued request's reply is matched to it even on a bus otherwise only listened to.
        let listen_only = requests.is_empty() && outstanding.is_none();
        let mut sink = |frame: Frame<'_>| {
            if !listen_only && !*transmitted {
                let adu = match &frame {
                    Frame::Reply(bytes) => Some(&bytes[..bytes.len() - 2]),
                    Frame::TcpReply { adu, .. } => Some(*adu),
                    Frame::Rejected(_) | Frame::Discarded(_) => None,
                };
                if let Some(adu) = adu {
                    *outstanding = replayed_request(blocks, replay_next, adu, modbus);
                    if let (Some(o), Frame::TcpReply { transaction, .. }) =
                        (outstanding.as_mut(), &frame)
                    {
                        o.transaction = Some(*transaction);
                    }
                }
            }
            let event = match frame {
                Frame::Reply(bytes) => {
                    let adu = &bytes[..bytes.len() - 2];
                    match reply(
                        *meter,
                        metrics,
                        outstanding,
                        listen_only,
                        None,
                        adu,
                        bytes,
                        stats,
                        modbus,
                    ) {
                        Some(event) => event,
                        None => return,
                    }
                }
                Frame::TcpReply { transaction, adu } => match reply(
                    *meter,
                    metrics,
                    outstanding,
                    listen_only,
                    Some(transaction),
                    adu,
                    adu,
                    stats,
                    modbus,
                ) {
                    Some(event) => event,
                    None => return,
                },
                Frame::Discarded(bytes) => {
                    stats.bytes_skipped += bytes as u64;
                    DecodeEvent::Discarded { bytes }
                }
                Frame::Rejected(e) => {
                    match e {
                        DecodeError::BadCrc { .. } => stats.crc_errors += 1,
                        _ => stats.rejected += 1,
                    }
                    DecodeEvent::Error(e)
                }
            };
            crate::decode::queue_event(events, event);
        };
        f(transport, &mut sink);
    }

    fn flush(&mut self, why: &'static str) {
        self.with_frames(|t, sink| match t {
            Transport::Rtu(f) => f.flush(why, sink),
            Transport::Tcp { framer, .. } => framer.flush(why, sink),
        });
    }

    fn pending(&self) -> usize {
        match &self.transport {
            Transport::Rtu(f) => f.pending(),
            Transport::Tcp { framer, .. } => framer.pending(),
        }
    }
}

/// One checked reply: matched to the request waiting for it, then read by the metric lines;
/// `None` for the good reply to a queued request, which no metric line reads.
#[allow(clippy::too_many_arguments)]
fn reply(
    meter: MeterIndex,
    metrics: &[Metric<BytePattern>],
    outstanding: &mut Option<Outstanding>,
    listen_only: bool,
    transaction: Option<u16>,
    adu: &[u8],
    frame: &[u8],
    stats: &mut DecodeStats,
    modbus: &mut ModbusStats,
) -> Option<DecodeEvent> {
    let reject = |stats: &mut DecodeStats, why: String| {
        stats.rejected += 1;
        Some(DecodeEvent::Error(DecodeError::Malformed {
            offset: 0,
            why,
        }))
    };
    if adu.len() < 2 {
        return reject(stats, "reply shorter than a unit id and function".into());
    }
    let (slave, function) = (adu[0], adu[1]);
    let block = if listen_only {
        None
    } else {
        let Some(asked) = outstanding.as_ref() else {
            modbus.unsolicited += 1;
            return reject(
                stats,
                format!("reply from slave {slave} with no request waiting (late or unsolicited)"),
            );
        };
        if transaction.is_some() && transaction != asked.transaction {
            modbus.wrong_request += 1;
            return reject(
                stats,
                format!(
                    "reply to transaction {} while {} was asked",
                    transaction.unwrap_or(0),
                    asked.transaction.unwrap_or(0)
                ),
            );
        }
        if slave != asked.slave {
            modbus.wrong_slave += 1;
            return reject(
                stats,
                format!(
                    "reply from slave {slave} while slave {} was asked",
                    asked.slave
                ),
            );
        }
        if function & 0x7f != asked.function {
            modbus.wrong_request += 1;
            return reject(
                stats,
                format!(
                    "slave {slave} answered function {:02X} while {:02X} was asked",
                    function & 0x7f,
                    asked.function
                ),
            );
        }
        if function & 0x80 == 0 {
            if let Some(want) = asked.byte_count {
                let got = adu.get(2).copied().unwrap_or(0);
                if got != want {
                    modbus.wrong_request += 1;
                    return reject(
                        stats,
                        format!(
                            "slave {slave} sent {got} data bytes, {want} were asked for \
                             (a reply to another request)"
                        ),
                    );
                }
            }
        }
        outstanding.take().map(|o| o.block)
    };
    if function & 0x80 == 0 && block == Some(QUEUED) {
        modbus.queued_replies += 1;
        tracing::debug!(meter, "slave {slave} answered the script's queued request");
        return None;
    }
    if function & 0x80 != 0 {
        modbus.exceptions += 1;
        let code = adu.get(2).copied().unwrap_or(0);
        return reject(
            stats,
            format!(
                "slave {slave} answered function {:02X} with exception {code:02X} ({})",
                function & 0x7f,
                exception_name(code)
            ),
        );
    }
    stats.telegrams += 1;
    let mut readings = Vec::new();
    for m in metrics {
        if m.pattern
            .block
            .is_some_and(|b| Some(usize::from(b)) != block)
        {
            continue;
        }
        if matches!(m.value, crate::script::model::ValueSpec::Text { .. }) {
            continue;
        }
        match crate::decode::bytes::read(&m.pattern, frame) {
            Ok(raw) => readings.push(Reading {
                entry: m.output.entry,
                value: Value::Number(crate::decode::scale(raw, &m.value)),
            }),
            Err(why) => {
                if m.pattern.block.is_some() {
                    // The reply this line waits for, yet the mask does not fit: say why.
                    tracing::debug!(
                        meter,
                        line = m.output.line,
                        "Modbus reply to block {:?} not read: {why}",
                        block
                    );
                }
            }
        }
    }
    Some(DecodeEvent::Telegram(Telegram { readings }))
}

/// The Modbus application protocol's names of exception codes.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        8 => "memory parity error",
        0x0a => "gateway path unavailable",
        0x0b => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

/// In a capture (nothing was sent), the request a reply answers: the next block in turn it fits,
/// blocks passed over counting as unanswered; if none fits, the next block, so the reply is
/// refused saying what was expected.
fn replayed_request(
    blocks: &[Vec<u8>],
    next: &mut usize,
    adu: &[u8],
    modbus: &mut ModbusStats,
) -> Option<Outstanding> {
    let n = blocks.len();
    for k in 0..n {
        let i = (*next + k) % n;
        if let Some(o) = expect(i, &blocks[i], None).filter(|o| o.fits(adu)) {
            modbus.no_reply += k as u64;
            *next = (i + 1) % n;
            return Some(o);
        }
    }
    expect(*next, blocks.get(*next)?, None)
}

impl Outstanding {
    /// Whether `adu` (unit id, function, data) can be the reply to this request.
    fn fits(&self, adu: &[u8]) -> bool {
        let (Some(&slave), Some(&function)) = (adu.first(), adu.get(1)) else {
            return false;
        };
        slave == self.slave
            && function & 0x7f == self.function
            && (function & 0x80 != 0
                || self.byte_count.is_none()
                || adu.get(2).copied() == self.byte_count)
    }
}

/// What the reply to a request must carry, from the request's own bytes (unit id + PDU).
fn expect(block: usize, request: &[u8], transaction: Option<u16>) -> Option<Outstanding> {
    let (&slave, &function) = (request.first()?, request.get(1)?);
    let quantity = request.get(4..6).map(|q| u16::from_be_bytes([q[0], q[1]]));
    let byte_count = match (function, quantity) {
        (0x03 | 0x04, Some(q)) => u8::try_from(q.saturating_mul(2)).ok(),
        (0x01 | 0x02, Some(q)) => u8::try_from(q.div_ceil(8)).ok(),
        _ => None,
    };
    Some(Outstanding {
        block,
        slave,
        function,
        byte_count,
        transaction,
    })
}

/// Log a count at its 1st, 10th, 100th, ... occurrence, so a dead slave does not flood the log.
fn rate_limited(count: u64) -> bool {
    let mut n = count;
    while n >= 10 && n % 10 == 0 {
        n /= 10;
    }
    n == 1
}

impl Decoder for ModbusDecoder {
    fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.stats.bytes_in += bytes.len() as u64;
        self.last_byte_at = Some(now);
        self.with_frames(|t, sink| match t {
            Transport::Rtu(f) => f.push(bytes, sink),
            Transport::Tcp { framer, .. } => framer.push(bytes, sink),
        });
    }

    fn poll_event(&mut self) -> Option<DecodeEvent> {
        self.events.pop_front()
    }

    fn queue_request(&mut self, request: &crate::script::model::RequestBlock) -> Option<Vec<u8>> {
        if self.queued.len() >= MAX_QUEUED_REQUESTS {
            self.queued.pop_front();
            self.modbus.queued_dropped += 1;
        }
        // Unit id + PDU, `0002` appended unless `r`, as the poll blocks; CRC or MBAP when sent.
        self.queued.push_back(request::tcp(request));
        None
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        let poll_due =
            !self.requests.is_empty() && self.requests.poll_timeout().is_none_or(|t| now >= t);
        let waiting_for_queued = self
            .queued_sent_at
            .filter(|_| self.outstanding.as_ref().is_some_and(|o| o.block == QUEUED))
            .is_some_and(|sent| now < sent + QUEUED_REPLY_WAIT);
        let (block, bytes) = if waiting_for_queued {
            return None;
        } else if !self.queued.is_empty() && (self.outstanding.is_none() || poll_due) {
            self.modbus.queued_sent += 1;
            self.queued_sent_at = Some(now);
            (QUEUED, self.queued.pop_front()?)
        } else {
            self.requests.poll_transmit(now)?
        };
        self.transmitted = true;
        // A new request ends the wait for the last one's reply.
        self.flush("the next request went out before the reply was complete");
        if let Some(missed) = self.outstanding.take() {
            self.modbus.no_reply += 1;
            if rate_limited(self.modbus.no_reply) {
                let what = if missed.block == QUEUED {
                    "the script's queued request".to_string()
                } else {
                    format!("request block {}", missed.block)
                };
                tracing::warn!(
                    meter = self.meter,
                    "slave {} did not answer {what} before the next request ({} unanswered so far)",
                    missed.slave,
                    self.modbus.no_reply
                );
            }
        }
        self.modbus.requests += 1;
        let (wire, transaction) = match &mut self.transport {
            // Queued requests get their CRC here.
            Transport::Rtu(_) if block == QUEUED => {
                let crc = request::CRC16_MODBUS.checksum(&bytes);
                let mut wire = bytes.clone();
                wire.extend_from_slice(&crc.to_le_bytes());
                (wire, None)
            }
            // RTU blocks are already framed (count and CRC appended by the front end).
            Transport::Rtu(_) => (bytes.clone(), None),
            Transport::Tcp {
                next_transaction, ..
            } => {
                let t = *next_transaction;
                *next_transaction = next_transaction.wrapping_add(1);
                (frame::mbap(t, &bytes), Some(t))
            }
        };
        self.outstanding = expect(block, &bytes, transaction);
        Some(wire)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let silence = self
            .last_byte_at
            .filter(|_| self.pending() > 0)
            .map(|t| t + SILENCE);
        // The polls wait for a queued request's reply at most this long.
        let queued = self
            .queued_sent_at
            .filter(|_| self.outstanding.as_ref().is_some_and(|o| o.block == QUEUED))
            .map(|t| t + QUEUED_REPLY_WAIT);
        [silence, self.requests.poll_timeout(), queued]
            .into_iter()
            .flatten()
            .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        let quiet = self.last_byte_at.is_some_and(|t| now >= t + SILENCE);
        if quiet && self.pending() > 0 {
            self.flush("the line went quiet in the middle of a frame");
        }
    }

    fn handle_end(&mut self) {
        self.flush("the input ended in the middle of a frame");
    }

    fn stats(&self) -> DecodeStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod queue_tests {
    use super::*;
    use crate::script::model::RequestBlock;

    /// Polls register 0 of slave 1 every 500 ms; `reg` reads the first register of any reply from
    /// slave 1 (no `iN:`), so a write's echo read by mistake would show as 768 (`03 00`).
    fn decoder() -> ModbusDecoder {
        let compiled = crate::script::compile(
            b">D\n>M 1\n+1,3,m,0,9600,SIM,1,5,01040000\n1,01xxxxUUuu@1,Reg,,reg,0\n#\n",
        );
        assert!(!compiled.has_errors(), "{:#?}", compiled.diagnostics);
        ModbusDecoder::new(&compiled.script.unwrap().meters[0])
    }

    fn rtu(bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        out.extend_from_slice(&request::CRC16_MODBUS.checksum(bytes).to_le_bytes());
        out
    }

    fn write_block() -> RequestBlock {
        RequestBlock {
            raw: true,
            bytes: vec![0x01, 0x06, 0x00, 0x03, 0x00, 0x42],
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_queued_write_goes_between_polls_and_its_echo_is_read_by_no_metric_line() {
        let mut d = decoder();
        let t0 = Instant::now();
        assert_eq!(d.poll_transmit(t0), Some(rtu(&[1, 4, 0, 0, 0, 2])));
        assert_eq!(
            d.queue_request(&write_block()),
            None,
            "the decoder keeps it"
        );
        assert_eq!(
            d.poll_transmit(t0),
            None,
            "the poll's reply is awaited first"
        );
        d.handle_bytes(t0 + ms(20), &rtu(&[1, 4, 4, 0x04, 0xD2, 0, 0]));
        assert!(
            matches!(d.poll_event(), Some(DecodeEvent::Telegram(t)) if t.readings[0].value == Value::Number(1234.0))
        );
        let write = rtu(&[1, 6, 0, 3, 0, 0x42]);
        assert_eq!(d.poll_transmit(t0 + ms(30)), Some(write.clone()));
        // The poll is due, but waits for the write's reply.
        assert_eq!(d.poll_transmit(t0 + ms(600)), None);
        d.handle_bytes(t0 + ms(650), &write);
        assert_eq!(d.poll_event(), None, "the echo publishes nothing");
        assert_eq!(
            d.poll_transmit(t0 + ms(650)),
            Some(rtu(&[1, 4, 0, 0, 0, 2]))
        );
        let m = d.modbus_stats();
        assert_eq!((m.queued_sent, m.queued_replies, m.no_reply), (1, 1, 0));
        assert_eq!(d.stats().rejections(), 0);
    }

    #[test]
    fn an_unanswered_queued_request_holds_the_polls_back_only_for_a_while() {
        let mut d = decoder();
        let t0 = Instant::now();
        d.queue_request(&write_block());
        assert_eq!(d.poll_transmit(t0), Some(rtu(&[1, 6, 0, 3, 0, 0x42])));
        assert_eq!(d.poll_transmit(t0 + ms(999)), None);
        assert_eq!(d.poll_timeout(), Some(t0 + QUEUED_REPLY_WAIT));
        assert_eq!(
            d.poll_transmit(t0 + QUEUED_REPLY_WAIT),
            Some(rtu(&[1, 4, 0, 0, 0, 2]))
        );
        assert_eq!(d.modbus_stats().no_reply, 1);
    }

    #[test]
    fn a_queued_request_without_r_gets_the_register_count_like_a_poll_block() {
        let mut d = decoder();
        d.queue_request(&RequestBlock {
            raw: false,
            bytes: vec![0x01, 0x03, 0x00, 0x10],
        });
        assert_eq!(
            d.poll_transmit(Instant::now()),
            Some(rtu(&[1, 3, 0, 0x10, 0, 2]))
        );
    }
}
