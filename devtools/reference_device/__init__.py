"""A reference iOS device: a program that behaves as docs/ios.md's app does.

It generates and stores its own 64-byte preview key (with the ACS SDK's app-group storage rules),
signs in through the development identity provider, registers its APNs and PushKit tokens with
pushrelay's HTTP API, receives its pushes from the APNs simulator, decrypts them the way the
ACS iOS chat SDK does with its own code (it never imports ``shared/``), renews its key when a
background push wakes it, completes a token-move proof, withdraws deleted messages and reports
calls to (a model of) CallKit.

    from devtools.reference_device import Endpoints, ReferenceDevice

    phone = ReferenceDevice.connect(Endpoints(app=APP, idp=IDP_TOKEN_URL, apns=SIM_CONTROL_URL))
    phone.sign_in("alice")        # POST /api/token: phone.acs_user_id
    phone.launch()                # PUT /api/devices: alert token + fresh key, PushKit token
    ...                           # a message is sent to alice
    phone.sync()                  # -> [DeviceEvent(BANNER, ...)]
    phone.banners[-1].body        # the decrypted text (or the fallback)
    phone.sign_out()
    phone.close()

From the command line: ``python -m devtools.reference_device --help``.
"""

from devtools.reference_device.apns import Push, PushSource, SimulatorPushes
from devtools.reference_device.calls import Call, CallPhase, EndReason, VoipPush, parse_voip_push
from devtools.reference_device.decryption import ChatMessageReceived, DecryptError, decrypt_payload
from devtools.reference_device.device import (
    DeviceEvent,
    Endpoints,
    Happened,
    ReferenceDevice,
    Registration,
    SignedOutError,
)
from devtools.reference_device.keystore import AppGroupKeyStorage, KeyStorageError, generate_key
from devtools.reference_device.notifications import Banner, extension_content
from devtools.reference_device.relay import (
    DevIdentityProvider,
    ProofRequired,
    Registered,
    RelayClient,
    RelayError,
)

__all__ = [
    "AppGroupKeyStorage",
    "Banner",
    "Call",
    "CallPhase",
    "ChatMessageReceived",
    "DecryptError",
    "DevIdentityProvider",
    "DeviceEvent",
    "EndReason",
    "Endpoints",
    "Happened",
    "KeyStorageError",
    "ProofRequired",
    "Push",
    "PushSource",
    "ReferenceDevice",
    "Registered",
    "Registration",
    "RelayClient",
    "RelayError",
    "SignedOutError",
    "SimulatorPushes",
    "VoipPush",
    "decrypt_payload",
    "extension_content",
    "generate_key",
    "parse_voip_push",
]
