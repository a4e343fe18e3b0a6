//! `alknet call`: one operation on the server's control channel.

use std::io::Write;
use std::time::Duration;

use alknet::Client;
use alknet::call::{OperationType, SERVICES_SCHEMA};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::cli::CallArgs;
use crate::commands::session::{connect_options, transport};
use crate::error::CliError;

pub(crate) async fn run(args: CallArgs) -> Result<(), CliError> {
    let input = match args.input.as_deref() {
        None => Value::Null,
        Some("-") => serde_json::from_reader(std::io::stdin().lock()).map_err(|error| {
            CliError::Usage(format!("standard input is not valid JSON: {error}"))
        })?,
        Some(text) => serde_json::from_str(text)
            .map_err(|error| CliError::Usage(format!("INPUT-JSON is not valid JSON: {error}")))?,
    };
    let transport = transport(&args.session)?;
    let options = connect_options(&args.session)?;
    let client = Client::connect(transport.as_ref(), options).await?;
    let result = call(
        &client,
        &args.path,
        input,
        Duration::from_secs(args.timeout),
    )
    .await;
    client.disconnect().await;
    transport.close().await;
    result
}

async fn call(client: &Client, path: &str, input: Value, limit: Duration) -> Result<(), CliError> {
    let control = client.open_control().await?;
    // Whether to expect one answer or a stream: the spec says. An operation
    // we cannot look up is called once, which reports why it failed.
    let op_type = control
        .call_with_timeout(SERVICES_SCHEMA, json!({ "name": path }), Some(limit))
        .await
        .ok()
        .and_then(|spec| serde_json::from_value::<OperationType>(spec["op_type"].clone()).ok());
    let mut stdout = std::io::stdout().lock();
    if op_type == Some(OperationType::Subscription) {
        let mut items = control
            .subscribe(path, input)
            .await
            .map_err(CliError::Call)?;
        while let Some(item) = items.next().await {
            print_json(&mut stdout, &item.map_err(CliError::Call)?)?;
        }
        Ok(())
    } else {
        let output = control
            .call_with_timeout(path, input, Some(limit))
            .await
            .map_err(CliError::Call)?;
        print_json(&mut stdout, &output)
    }
}

fn print_json(out: &mut impl Write, value: &Value) -> Result<(), CliError> {
    writeln!(out, "{value}")
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}
