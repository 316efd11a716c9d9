// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

/// @title PaymentChannels
/// @notice One-way payment channels in native currency for ledgermesh: a payer
/// locks a deposit for one payee and pays off chain with vouchers, each an
/// EIP-712 signature over the channel and the cumulative amount owed so far.
/// The payee claims with the latest voucher at any time (the amount only
/// grows, so an old voucher claims nothing more). The payer can top up, and
/// close: closing starts a delay during which the payee can still claim;
/// after it the rest of the deposit goes back to the payer.
contract PaymentChannels {
    /// How long a payer's close waits for the payee's last claim.
    uint64 public constant CLOSE_DELAY = 1 days;

    /// The EIP-712 type of a voucher.
    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)");

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

    /// Upper bound of `s` in a non-malleable secp256k1 signature (EIP-2).
    uint256 private constant HALF_N =
        0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    struct Channel {
        address payer;
        uint64 closesAt; // 0 while open
        address payee;
        uint128 deposit;
        uint128 claimed;
    }

    /// Channels by id; a finished channel is deleted.
    mapping(bytes32 => Channel) public channels;

    /// Channels opened so far (part of each id, so ids never repeat).
    uint256 public opened;

    event Opened(bytes32 indexed id, address indexed payer, address indexed payee, uint256 deposit);
    event ToppedUp(bytes32 indexed id, uint256 amount, uint256 deposit);
    event Claimed(bytes32 indexed id, address indexed payee, uint256 amount, uint256 claimed);
    event CloseStarted(bytes32 indexed id, uint256 closesAt);
    event Closed(bytes32 indexed id, uint256 refunded, uint256 claimed);

    error NoSuchChannel(bytes32 id);
    error NotPayer(bytes32 id);
    error NotPayee(bytes32 id);
    error ZeroDeposit();
    error BadPayee();
    error DepositTooLarge();
    error Closing(bytes32 id);
    error NotClosing(bytes32 id);
    error TooEarly(bytes32 id, uint256 closesAt);
    error BadSignature();
    error NothingToClaim(bytes32 id, uint256 cumulative, uint256 claimed);
    error TransferFailed();

    /// The EIP-712 domain separator of this contract on this chain.
    function domainSeparator() public view returns (bytes32) {
        return keccak256(
            abi.encode(
                DOMAIN_TYPEHASH,
                keccak256("ledgermesh-payments"),
                keccak256("1"),
                block.chainid,
                address(this)
            )
        );
    }

    /// The digest a payer signs for a voucher.
    function voucherDigest(bytes32 id, uint128 cumulative) public view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(VOUCHER_TYPEHASH, id, cumulative));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    /// Opens a channel from the sender to `payee` with the value sent.
    function open(address payee) external payable returns (bytes32 id) {
        if (msg.value == 0) revert ZeroDeposit();
        if (payee == address(0) || payee == msg.sender) revert BadPayee();
        if (msg.value > type(uint128).max) revert DepositTooLarge();
        id = keccak256(abi.encode(block.chainid, address(this), msg.sender, payee, opened));
        opened += 1;
        channels[id] = Channel({
            payer: msg.sender,
            closesAt: 0,
            payee: payee,
            deposit: uint128(msg.value),
            claimed: 0
        });
        emit Opened(id, msg.sender, payee, msg.value);
    }

    /// Adds the value sent to the deposit of an open channel.
    function topUp(bytes32 id) external payable {
        Channel storage c = _channel(id);
        if (msg.sender != c.payer) revert NotPayer(id);
        if (c.closesAt != 0) revert Closing(id);
        if (msg.value == 0) revert ZeroDeposit();
        uint256 deposit = uint256(c.deposit) + msg.value;
        if (deposit > type(uint128).max) revert DepositTooLarge();
        c.deposit = uint128(deposit);
        emit ToppedUp(id, msg.value, deposit);
    }

    /// Pays the payee what the payer's voucher for `cumulative` owes beyond
    /// what was claimed (never more than the deposit). Also while closing.
    function claim(bytes32 id, uint128 cumulative, bytes calldata signature) external {
        Channel storage c = _channel(id);
        if (msg.sender != c.payee) revert NotPayee(id);
        uint128 amount = _settle(id, c, cumulative, signature);
        _send(c.payee, amount);
    }

    /// Claims (when the voucher owes more), then closes at once: the rest of
    /// the deposit goes back to the payer.
    function claimAndClose(bytes32 id, uint128 cumulative, bytes calldata signature) external {
        Channel storage c = _channel(id);
        if (msg.sender != c.payee) revert NotPayee(id);
        uint128 amount = 0;
        if (cumulative > c.claimed) {
            amount = _settle(id, c, cumulative, signature);
        }
        address payee = c.payee;
        _finish(id, c);
        if (amount > 0) {
            _send(payee, amount);
        }
    }

    /// The payer starts closing: the payee has `CLOSE_DELAY` to claim.
    function startClose(bytes32 id) external {
        Channel storage c = _channel(id);
        if (msg.sender != c.payer) revert NotPayer(id);
        if (c.closesAt != 0) revert Closing(id);
        c.closesAt = uint64(block.timestamp) + CLOSE_DELAY;
        emit CloseStarted(id, c.closesAt);
    }

    /// After the delay, refunds the rest of the deposit to the payer.
    function finishClose(bytes32 id) external {
        Channel storage c = _channel(id);
        if (msg.sender != c.payer) revert NotPayer(id);
        if (c.closesAt == 0) revert NotClosing(id);
        if (block.timestamp < c.closesAt) revert TooEarly(id, c.closesAt);
        _finish(id, c);
    }

    function _channel(bytes32 id) private view returns (Channel storage c) {
        c = channels[id];
        if (c.payer == address(0)) revert NoSuchChannel(id);
    }

    /// Checks the voucher and books the claim; the caller sends the amount
    /// after every state change (no re-entry can see a stale channel).
    function _settle(bytes32 id, Channel storage c, uint128 cumulative, bytes calldata signature)
        private
        returns (uint128 amount)
    {
        if (_signer(voucherDigest(id, cumulative), signature) != c.payer) revert BadSignature();
        uint128 owed = cumulative < c.deposit ? cumulative : c.deposit;
        if (owed <= c.claimed) revert NothingToClaim(id, cumulative, c.claimed);
        amount = owed - c.claimed;
        c.claimed = owed;
        emit Claimed(id, c.payee, amount, owed);
    }

    /// Deletes the channel, then refunds the payer what was not claimed.
    function _finish(bytes32 id, Channel storage c) private {
        address payer = c.payer;
        uint128 refund = c.deposit - c.claimed;
        uint128 claimed = c.claimed;
        delete channels[id];
        emit Closed(id, refund, claimed);
        if (refund > 0) {
            _send(payer, refund);
        }
    }

    function _send(address to, uint256 amount) private {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    /// The signer of `digest`, refusing malleable (high-s) and malformed signatures.
    function _signer(bytes32 digest, bytes calldata signature) private pure returns (address) {
        if (signature.length != 65) revert BadSignature();
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) v += 27;
        if ((v != 27 && v != 28) || uint256(s) > HALF_N) revert BadSignature();
        address signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert BadSignature();
        return signer;
    }
}
