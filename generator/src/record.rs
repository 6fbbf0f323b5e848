//! What the generator yields: one Kafka record with its ground-truth fault label.

use std::borrow::Cow;

use pipeline::model::{Message, Topic};
use pipeline::time::{Millis, Timestamp};

use crate::FaultKind;

/// The value of a record.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload<'c> {
    /// A message of the topic's model (possibly with impossible values).
    Message(Message<'c>),
    /// Bytes that do not decode as the topic's model (malformed JSON, a missing field).
    Raw(Vec<u8>),
}

/// One record as a producer sends it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record<'c> {
    /// Topic.
    pub topic: Topic,
    /// Kafka key: the device or incident id.
    pub key: Cow<'c, str>,
    /// The event time the value carries (for a `clock_skew` record, the skewed time).
    pub event_time_ms: Millis,
    /// When the producer sends it; records come out in this order.
    pub produce_time_ms: Millis,
    /// The value.
    pub payload: Payload<'c>,
    /// The injected fault, if any (for a duplicate, only the re-sent copy is labelled).
    pub fault: Option<FaultKind>,
}

impl Record<'_> {
    /// The decoded message, unless the payload is raw bytes.
    pub fn message(&self) -> Option<&Message<'_>> {
        match &self.payload {
            Payload::Message(m) => Some(m),
            Payload::Raw(_) => None,
        }
    }

    /// Appends the Kafka value bytes to `out`.
    pub fn write_value(&self, out: &mut Vec<u8>) {
        match &self.payload {
            Payload::Message(m) => m.write_json(out),
            Payload::Raw(bytes) => out.extend_from_slice(bytes),
        }
    }

    /// Appends one JSONL line to `out`:
    /// `{"topic":…,"key":…,"produce_time":…,"value":{…}}` with `"value_raw":"…"` (the bytes as a
    /// JSON string) for raw payloads and `,"fault":"…"` for faulty records, then `\n`.
    pub fn write_jsonl(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"topic\":\"");
        out.extend_from_slice(self.topic.name().as_bytes());
        out.extend_from_slice(b"\",\"key\":");
        write_json_str(out, &self.key);
        out.extend_from_slice(b",\"produce_time\":");
        // Writing a timestamp or a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &Timestamp::Utc(self.produce_time_ms));
        match &self.payload {
            Payload::Message(m) => {
                out.extend_from_slice(b",\"value\":");
                m.write_json(out);
            }
            Payload::Raw(bytes) => {
                out.extend_from_slice(b",\"value_raw\":");
                write_json_str(out, &String::from_utf8_lossy(bytes));
            }
        }
        if let Some(fault) = self.fault {
            out.extend_from_slice(b",\"fault\":\"");
            out.extend_from_slice(fault.name().as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"}\n");
    }
}

/// Writes `s` as a JSON string; ids and names are plain ASCII, so the escaping path is rare.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves raw payloads are written as a JSON string and labels are appended.
    #[test]
    fn raw_line() {
        let r = Record {
            topic: Topic::Parking,
            key: Cow::Borrowed("PK-001"),
            event_time_ms: 0,
            produce_time_ms: 1_500,
            payload: Payload::Raw(b"{\"parking_id\":\"PK".to_vec()),
            fault: Some(FaultKind::MalformedJson),
        };
        let mut out = Vec::new();
        r.write_jsonl(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"topic\":\"parking\",\"key\":\"PK-001\",\"produce_time\":\"1970-01-01T00:00:01.500Z\",\"value_raw\":\"{\\\"parking_id\\\":\\\"PK\",\"fault\":\"malformed_json\"}\n"
        );
        let mut value = Vec::new();
        r.write_value(&mut value);
        assert_eq!(value, b"{\"parking_id\":\"PK");
    }
}
