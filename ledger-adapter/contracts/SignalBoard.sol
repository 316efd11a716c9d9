// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import "./PaymentChannels.sol";

/// @title SignalBoard
/// @notice A public bulletin board of 32-byte topics for ledgermesh signaling.
/// Anyone may post; a post only emits an event (nothing is stored), so a
/// follower reads a topic by filtering `Posted` logs on the indexed topic.
/// Payloads are sealed envelopes of a few hundred bytes; the cap bounds what
/// one post can make every follower of a topic download.
/// The board deploys its payment-channel contract with itself, so the board's
/// address is all a node needs to find both.
contract SignalBoard {
    /// Largest payload accepted, in bytes.
    uint256 public constant MAX_PAYLOAD = 8192;

    /// The payment channels that go with this board.
    PaymentChannels public immutable payments;

    constructor() {
        payments = new PaymentChannels();
    }

    /// A payload was posted to `topic` by `sender`.
    event Posted(bytes32 indexed topic, address indexed sender, bytes payload);

    /// The payload is over `MAX_PAYLOAD`.
    error PayloadTooLarge(uint256 length, uint256 max);

    /// Posts `payload` to `topic`.
    function post(bytes32 topic, bytes calldata payload) external {
        if (payload.length > MAX_PAYLOAD) {
            revert PayloadTooLarge(payload.length, MAX_PAYLOAD);
        }
        emit Posted(topic, msg.sender, payload);
    }
}
