//! `labels.json`, as Apptainer writes and reads it.

use std::collections::BTreeMap;

/// `labels.json`: a tab-indented JSON object, as Apptainer writes it.
pub fn labels_json(labels: &BTreeMap<String, String>) -> String {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    serde::Serialize::serialize(labels, &mut ser).expect("a string map always serialises");
    String::from_utf8(buf).expect("serde_json writes UTF-8") + "\n"
}

/// The labels of a `labels.json`; a value that is not a string is kept as its JSON text.
/// `None` when the text is not a JSON object.
pub fn parse_labels(json: &[u8]) -> Option<BTreeMap<String, String>> {
    let map = serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(json).ok()?;
    Some(
        map.into_iter()
            .map(|(k, v)| {
                let v = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                (k, v)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_tab_indented_json() {
        let mut labels = BTreeMap::new();
        labels.insert("org.example.a".to_string(), "1".to_string());
        assert_eq!(labels_json(&labels), "{\n\t\"org.example.a\": \"1\"\n}\n");
    }

    #[test]
    fn parsed_labels_round_trip_and_keep_other_values_as_json() {
        let mut labels = BTreeMap::new();
        labels.insert("a".to_string(), "x y".to_string());
        assert_eq!(parse_labels(labels_json(&labels).as_bytes()), Some(labels));
        let mixed = parse_labels(br#"{"n": 3, "s": "t"}"#).unwrap();
        assert_eq!(mixed["n"], "3");
        assert_eq!(mixed["s"], "t");
        assert_eq!(parse_labels(b"[1]"), None);
    }
}
