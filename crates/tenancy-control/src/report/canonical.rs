//! The canonical serialization a report's signature covers: RFC 8785, the JSON
//! Canonicalization Scheme (JCS), for the values a report holds.
//!
//! - No whitespace between tokens.
//! - Object members sorted by their names' UTF-16 code units (JCS §3.2.3); a name appears
//!   once (a parsed document with a repeated name keeps its last value, as serde_json
//!   does, so it cannot verify with a value the signer did not see twice).
//! - Strings: `"` and `\` escaped, `\b \t \n \f \r` as such, other controls below U+0020
//!   as `\u00xx` (lower-case hex), everything else as its UTF-8 bytes (JCS §3.2.2.2).
//! - Numbers: integers in decimal; other numbers as ECMAScript prints them (JCS §3.2.2.3):
//!   an integral value below 2^53 without a fraction, the others in their shortest
//!   round-trip form, which is what ECMAScript prints between 10^-6 and 10^21 (a report's
//!   fractional numbers are rounded to 3 decimals and far inside that range).
//!
//! A verifier in another language canonicalizes the parsed `report` member with any
//! RFC 8785 library and checks the signature over the prefix and those bytes.

use serde_json::Value;

/// The canonical bytes of `v`.
pub fn canonical(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => number(n, out),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                write(v, out);
            }
            out.push(b'}');
        }
    }
}

fn number(n: &serde_json::Number, out: &mut Vec<u8>) {
    if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(u) = n.as_u64() {
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(f) = n.as_f64() {
        // 2^53: integral values below it print without a fraction in ECMAScript.
        if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
            if f == 0.0 {
                // -0 prints as 0.
                out.push(b'0');
            } else {
                out.extend_from_slice(format!("{}", f as i64).as_bytes());
            }
        } else {
            // serde_json writes the shortest round-trip digits (ryu).
            out.extend_from_slice(n.to_string().as_bytes());
        }
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if (c as u32) < 0x20 => {
                let b = c as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &str) -> String {
        let v: Value = serde_json::from_str(v).expect("json");
        String::from_utf8(canonical(&v)).expect("utf-8")
    }

    #[test]
    fn members_are_sorted_by_utf16_and_whitespace_is_gone() {
        assert_eq!(
            text(
                r#"{ "b": [1, 2, {"z": null, "a": true}], "a": "x", "\u00e9": 1, "\ud83d\ude00": 2, "\uff61": 3 }"#
            ),
            // U+1F600 is a surrogate pair (0xD83D…), which sorts before U+FF61 in UTF-16
            // although it comes after it in UTF-8.
            "{\"a\":\"x\",\"b\":[1,2,{\"a\":true,\"z\":null}],\"é\":1,\"😀\":2,\"｡\":3}"
        );
    }

    #[test]
    fn strings_and_numbers_are_written_as_rfc_8785_says() {
        assert_eq!(
            text(
                r#"["\u0000\u001f\b\t\n\f\r\"\\/<\u2028", 2.0, -0.0, 1.5, 0.001, 12345678901234, -7]"#
            ),
            "[\"\\u0000\\u001f\\b\\t\\n\\f\\r\\\"\\\\/<\u{2028}\",2,0,1.5,0.001,12345678901234,-7]"
        );
    }
}
