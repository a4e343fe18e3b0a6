//! The committed test vectors (`tests/vectors.json`), and the codec over a
//! real async stream.

use alknet_call::{EnvelopeCodec, EventEnvelope};
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

fn vectors() -> Vec<(String, EventEnvelope, Vec<u8>)> {
    let text = include_str!("vectors.json");
    let file: Value = serde_json::from_str(text).unwrap();
    file["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vector| {
            let description = vector["description"].as_str().unwrap().to_owned();
            let envelope: EventEnvelope =
                serde_json::from_value(vector["envelope"].clone()).unwrap();
            let hex = vector["frame_hex"].as_str().unwrap();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (description, envelope, bytes)
        })
        .collect()
}

#[test]
fn every_vector_encodes_to_its_exact_bytes_and_back() {
    let vectors = vectors();
    assert!(vectors.len() >= 6);
    let mut codec = EnvelopeCodec::default();
    for (description, envelope, bytes) in vectors {
        let mut encoded = BytesMut::new();
        codec.encode(&envelope, &mut encoded).unwrap();
        assert_eq!(
            encoded.as_ref(),
            bytes.as_slice(),
            "{description}: encoding differs"
        );
        let mut wire = BytesMut::from(bytes.as_slice());
        assert_eq!(
            codec.decode(&mut wire).unwrap(),
            Some(envelope),
            "{description}"
        );
        assert!(wire.is_empty());
    }
}

#[tokio::test]
async fn envelopes_cross_an_async_stream_in_order() {
    let (near, far) = tokio::io::duplex(1024);
    let mut sink = FramedWrite::new(near, EnvelopeCodec::default());
    let mut stream = FramedRead::new(far, EnvelopeCodec::default());
    let sent: Vec<EventEnvelope> = vectors()
        .into_iter()
        .map(|(_, envelope, _)| envelope)
        .collect();
    let sending = async {
        for envelope in &sent {
            sink.send(envelope.clone()).await.unwrap();
        }
        SinkExt::<EventEnvelope>::close(&mut sink).await.unwrap();
    };
    let receiving = async {
        let mut received = Vec::new();
        while let Some(envelope) = stream.next().await {
            received.push(envelope.unwrap());
        }
        received
    };
    let ((), received) = tokio::join!(sending, receiving);
    assert_eq!(received, sent);
}
