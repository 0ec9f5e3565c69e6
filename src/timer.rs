/*!
The one "sleep until this deadline, or forever when there is none" of the `select!` loops (meter
tasks, the MQTT sink, `sml record`): a branch with nothing due must never fire.
*/

/// Sleep until `deadline`; with none, never return.
pub(crate) async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
