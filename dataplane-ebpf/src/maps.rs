//! Every map of the dataplane. Names and sizes come from `pier_common::maps`.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use pier_common::{
    ct::{CtVal, FlowKey},
    endpoint::{Addr6, EndpointVal, EndpointVal4, NetworkVal, UplinkVal, VethEp4, VethVal},
    event::{IfPkts, IfStats, KCOUNTERS_LEN},
    frag::{FragKey, FragKey6, FragVal, FragVal6},
    maps::*,
    metrics::Counter,
    nat::{NatVal, PortBits, PortKey, PortVal, SockKey, SockVal},
    nat6::{CtVal6, FlowKey6, NatVal6, PortKey6, PortVal6, SockKey6, SockVal6, UplinkVal6},
    policy::{PolicyKey, PolicyVal},
};

#[map(name = "SMOKE_COUNTERS")]
pub static SMOKE_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(SMOKE_COUNTERS_LEN, 0);

#[map(name = "PIER_PORTS")]
pub static PORTS: HashMap<PortKey, PortVal> = HashMap::with_max_entries(PORTS_LEN, 0);

#[map(name = "PIER_BACKENDS")]
pub static BACKENDS: HashMap<PortKey, PortKey> = HashMap::with_max_entries(PORTS_LEN, 0);

#[map(name = "PIER_PORT_STATS")]
pub static PORT_STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(PORTS_LEN, 0);

#[map(name = "PIER_PORT_DROPS")]
pub static PORT_DROPS: PerCpuHashMap<PortKey, Counter> =
    PerCpuHashMap::with_max_entries(PORTS_LEN, 0);

#[map(name = "PIER_POLICY")]
pub static POLICY: LpmTrie<PolicyKey, PolicyVal> = LpmTrie::with_max_entries(POLICY_LEN, 0);

#[map(name = "PIER_ENDPOINTS")]
pub static ENDPOINTS: HashMap<u32, EndpointVal4> = HashMap::with_max_entries(ENDPOINTS_LEN, 0);

#[map(name = "PIER_NETWORKS")]
pub static NETWORKS: HashMap<u32, NetworkVal> = HashMap::with_max_entries(NETWORKS_LEN, 0);

#[map(name = "PIER_SUBNETS")]
pub static SUBNETS: LpmTrie<u32, u32> = LpmTrie::with_max_entries(NETWORKS_LEN, 0);

#[map(name = "PIER_ENDPOINTS6")]
pub static ENDPOINTS6: HashMap<Addr6, EndpointVal> = HashMap::with_max_entries(ENDPOINTS_LEN, 0);

#[map(name = "PIER_SUBNETS6")]
pub static SUBNETS6: LpmTrie<Addr6, u32> = LpmTrie::with_max_entries(NETWORKS_LEN, 0);

#[map(name = "PIER_HOST_ADDR6")]
pub static HOST_ADDRS6: HashMap<Addr6, u32> = HashMap::with_max_entries(HOST_ADDRS_LEN, 0);

#[map(name = "PIER_VETHS")]
pub static VETHS: HashMap<u32, VethVal> = HashMap::with_max_entries(ENDPOINTS_LEN, 0);

#[map(name = "PIER_HOST_ADDRS")]
pub static HOST_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(HOST_ADDRS_LEN, 0);

#[map(name = "PIER_UPLINK")]
pub static UPLINK: Array<UplinkVal> = Array::with_max_entries(1, 0);

#[map(name = "PIER_UPLINKS")]
pub static UPLINKS: HashMap<u32, UplinkVal> = HashMap::with_max_entries(UPLINKS_LEN, 0);

#[map(name = "PIER_UPLINKS6")]
pub static UPLINKS6: HashMap<u32, UplinkVal6> = HashMap::with_max_entries(UPLINKS_LEN, 0);

#[map(name = "PIER_CT")]
pub static CT: LruHashMap<FlowKey, CtVal> = LruHashMap::with_max_entries(CT_LEN, 0);

#[map(name = "PIER_SNAT_FWD")]
pub static SNAT_FWD: HashMap<FlowKey, NatVal> = HashMap::with_max_entries(SNAT_LEN, SNAT_FLAGS);

#[map(name = "PIER_SNAT_REV")]
pub static SNAT_REV: HashMap<FlowKey, NatVal> = HashMap::with_max_entries(SNAT_LEN, SNAT_FLAGS);

#[map(name = "PIER_SOCK_NAT")]
pub static SOCK_NAT: LruHashMap<SockKey, SockVal> = LruHashMap::with_max_entries(SOCK_NAT_LEN, 0);

#[map(name = "PIER_FRAGS")]
pub static FRAGS: LruHashMap<FragKey, FragVal> = LruHashMap::with_max_entries(FRAGS_LEN, 0);

#[map(name = "PIER_FRAGS6")]
pub static FRAGS6: LruHashMap<FragKey6, FragVal6> = LruHashMap::with_max_entries(FRAGS_LEN, 0);

#[map(name = "PIER_DROPS")]
pub static DROPS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(DROPS_LEN, 0);

#[map(name = "PIER_PORTS6")]
pub static PORTS6: HashMap<PortKey6, PortVal6> = HashMap::with_max_entries(PORTS_LEN, 0);

#[map(name = "PIER_BACKENDS6")]
pub static BACKENDS6: HashMap<PortKey6, PortKey6> = HashMap::with_max_entries(PORTS_LEN, 0);

#[map(name = "PIER_PORT_STAT6")]
pub static PORT_STATS6: PerCpuArray<Counter> = PerCpuArray::with_max_entries(PORTS_LEN, 0);

#[map(name = "PIER_PORT_DROP6")]
pub static PORT_DROPS6: PerCpuHashMap<PortKey6, Counter> =
    PerCpuHashMap::with_max_entries(PORTS_LEN, 0);

#[map(name = "PIER_NETWORKS6")]
pub static NETWORKS6: HashMap<u32, Addr6> = HashMap::with_max_entries(NETWORKS_LEN, 0);

#[map(name = "PIER_UPLINK6")]
pub static UPLINK6: Array<UplinkVal6> = Array::with_max_entries(1, 0);

#[map(name = "PIER_CT6")]
pub static CT6: LruHashMap<FlowKey6, CtVal6> = LruHashMap::with_max_entries(CT_LEN, 0);

#[map(name = "PIER_SNAT_FWD6")]
pub static SNAT_FWD6: HashMap<FlowKey6, NatVal6> = HashMap::with_max_entries(SNAT_LEN, SNAT_FLAGS);

#[map(name = "PIER_SNAT_REV6")]
pub static SNAT_REV6: HashMap<FlowKey6, NatVal6> = HashMap::with_max_entries(SNAT_LEN, SNAT_FLAGS);

#[map(name = "PIER_SOCK_NAT6")]
pub static SOCK_NAT6: LruHashMap<SockKey6, SockVal6> =
    LruHashMap::with_max_entries(SOCK_NAT_LEN, 0);
#[map(name = "PIER_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map(name = "PIER_PORT_CFG")]
pub static PORT_CFG: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "PIER_PORT_UNPUB")]
pub static PORT_UNPUB: Array<PortBits> = Array::with_max_entries(1, 0);

#[map(name = "PIER_VETH_EP4")]
pub static VETH_EP4: Array<VethEp4> = Array::with_max_entries(IF_PKTS_LEN, 0);

#[map(name = "PIER_MON_CFG")]
pub static MON_CFG: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "PIER_KCOUNTERS")]
pub static KCOUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(KCOUNTERS_LEN, 0);

#[map(name = "PIER_IF_STATS")]
pub static IF_STATS: PerCpuHashMap<u32, IfStats> = PerCpuHashMap::with_max_entries(IF_STATS_LEN, 0);

#[map(name = "PIER_IF_PKTS")]
pub static IF_PKTS: PerCpuArray<IfPkts> = PerCpuArray::with_max_entries(IF_PKTS_LEN, 0);
