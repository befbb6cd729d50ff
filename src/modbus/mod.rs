//! Modbus polling (to be implemented).

use tokio_util::sync::CancellationToken;

use crate::config::{BusConfig, DeviceConfig};
use crate::queue::Queue;

/// Polls one device until `cancel` fires. Never returns early on device errors.
pub async fn run_device(
    _device: DeviceConfig,
    _bus: BusConfig,
    _queue: Queue,
    cancel: CancellationToken,
) {
    cancel.cancelled().await;
}
