"""Reading a NetworkPolicy as the API server holds it. The local cluster's network plugin (a
plain bridge) does not enforce NetworkPolicies, so the e2e tests check what the installed
policies allow for the real addresses of the pods, Services and node they protect, with positive
controls so that the reading cannot pass vacuously."""
import ipaddress


def egress_allows(policy, address: str, port: int) -> bool:
    """Whether a NetworkPolicy's egress rules let a pod it selects reach address:port (TCP), for
    an address outside the cluster's pods (so that only ipBlock peers, or no peers, can match)."""
    ip = ipaddress.ip_address(address)

    def peer_matches(peer):
        block = peer.ip_block
        return block is not None and ip in ipaddress.ip_network(block.cidr) and not any(
            ip in ipaddress.ip_network(e) for e in block._except or [])

    for rule in policy.spec.egress or []:
        ports_ok = not rule.ports or any(p.port in (None, port) and (p.protocol or "TCP") == "TCP"
                                         for p in rule.ports)
        if ports_ok and (not rule.to or any(peer_matches(peer) for peer in rule.to)):
            return True
    return False
