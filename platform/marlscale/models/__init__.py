"""Networks: the shared agent Q-network, the mixers, and the RLlib module that holds them."""

from marlscale.models.agent_net import AgentQNet
from marlscale.models.mixers import MIXERS, QMixer, VDNMixer

__all__ = ["AgentQNet", "MIXERS", "QMixer", "VDNMixer"]
