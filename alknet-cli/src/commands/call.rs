//! `alknet call`: one operation on the server's control channel.

use std::io::Write;
use std::time::Duration;

use alknet::Client;
use alknet::call::{OperationType, SERVICES_SCHEMA};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::cli::CallArgs;
use crate::commands::session::{connect_options, resolve_destination, transport};
use crate::error::CliError;

pub(crate) async fn run(mut args: CallArgs) -> Result<(), CliError> {
    // Without DESTINATION (the server came from --server or ALKNET_SERVER),
    // the first word is the operation: operations start with '/'.
    if args
        .session
        .destination
        .as_deref()
        .is_some_and(|first| first.starts_with('/'))
    {
        if args.input.is_some() {
            return Err(CliError::Usage(
                "too many arguments: expected [DESTINATION] OPERATION [INPUT-JSON]".into(),
            ));
        }
        args.input = args.path.take();
        args.path = args.session.destination.take();
    }
    let path = args
        .path
        .clone()
        .ok_or_else(|| CliError::Usage("missing OPERATION (such as /services/list)".into()))?;
    resolve_destination(&mut args.session)?;
    let input = match args.input.as_deref() {
        None => Value::Null,
        Some("-") => serde_json::from_reader(std::io::stdin().lock()).map_err(|error| {
            CliError::Usage(format!("standard input is not valid JSON: {error}"))
        })?,
        Some(text) => serde_json::from_str(text)
            .map_err(|error| CliError::Usage(format!("INPUT-JSON is not valid JSON: {error}")))?,
    };
    let options = connect_options(&args.session)?;
    let transport = transport(&args.session, &options)?;
    let client = Client::connect(transport.as_ref(), options).await?;
    let result = call(&client, &path, input, Duration::from_secs(args.timeout)).await;
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
