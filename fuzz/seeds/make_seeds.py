#!/usr/bin/env python3
"""Writes the seed corpora (fuzz/corpus/<target>/seed-*) from the output shapes the crates'
unit tests use. Run from anywhere; rewrites only seed-* files."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "corpus")


def write(target, seeds):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        if f.startswith("seed-"):
            os.remove(os.path.join(d, f))
    for i, s in enumerate(seeds):
        data = s if isinstance(s, bytes) else s.encode()
        with open(os.path.join(d, f"seed-{i:03}"), "wb") as fh:
            fh.write(data)


write("volume_handle", [
    "/exaFS/nginx-persistent",
    "exa1:/exaFS/nginx-persistent",
    "exa2:/nginx-persistent",
    "exa1:10.3.3.200@tcp;/exaFS:/mountPoint-csi:/nginx-persistent",
    "exa2:10.9.9.9@tcp;/csi-fs/zone-2:/old-mount:/pvc-1",
    "exa2:10.3.1.200@tcp;/csi-fs:/old:/zone-2/pvc-1",
    "exa2:10.3.1.200@tcp;10.3.2.200@tcp;/other:/mnt/other:/pvc-2",
    "fe80:fe80::1@tcp;/v6fs/sub:/v6:/pvc-3",
    "exa1:/../../etc",
    "exa1:/exaFS/.pfs-csi",
    "exa2:/a//./b/",
    "exa1:snapshot:snapshot-0c6b",
    "exa9:snapshot:s",
    "beegfs://10.0.0.5/k8s/all/pvc-7621fab2",
    "beegfs://beegfs-mgmt.example.com/scratch",
    "beegfs://[fd00::5]/data/x",
    "beegfs://10.0.0.5/dir%20with%20space",
    "beegfs://h//a/./b/",
    "beegfs://h/a/%2E%2E/b",
    "beegfs-snap://10.0.0.5/k8s/all/snap-1",
    "beegfs-snap://h/s",
    # A filesystem subdirectory component longer than Lustre allows (found by fuzzing).
    "exa2:10.3.1.200@tcp;/csi-fs/zone-2/" + "d" * 256 + ":/m:/pvc-1",
])

write("lustre_config", [
    """exascaler_map:
  exa1:
    mountPoint: /exaFS
    exaFS: 192.168.88.114@tcp2:192.168.98.114@tcp2:/testfs
    managementIp: 10.204.86.114@tcp
    zone: zone-1
  exa2:
    mountPoint: /exaFS-zone-2
    exaFS: 192.168.78.112@tcp2:/testfs/zone-2
    managementIp: 10.204.86.114@tcp
    zone: zone-2
  exa3:
    mountPoint: /exaFS-zone-3
    exaFS: 192.168.98.113@tcp2:192.168.88.113@tcp2:/testfs/zone-3
    managementIp: 10.204.86.114@tcp
    zone: zone-3
    bindMount: "false"
    defaultMountOptions: flock,user_xattr
    tempMountPoint: /tmp/exafs-mnt
    volumeDirPermissions: "0775"
    v1xCompatible: "true"
debug: true
""",
    "exaFS: 10.3.196.24@tcp:/csi\nmountPoint: /exaFS\ndebug: true\n",
    """exascaler_map:
  exa1:
    exaFS: 10.0.0.1@tcp:/fs
    mountPoint: /exaFS
    defaultMountOptions: [flock, noatime]
    volumeDirPermissions: 0777
    hotNodes: true
openshift: yes
pfsCsi:
  lustre:
    lfs: /sim/lfs
    commandTimeoutSeconds: "5"
    enforceQuota: "false"
    nodeZone: zone-1
    metadataDir: .meta
""",
    """exascaler_map:
  a: {exaFS: "fe80::1@tcp,10.0.0.2@o2ib:/fs/sub/dir", mountPoint: /x, v1xCompatible: 1}
  b: {exaFS: "1.2.3.4@tcp:/gs", mountPoint: /y/z, bindMount: off, zone: z-2}
""",
    """exascaler_map:
  a: {exaFS: "1.2.3.4@tcp:/fs", mountPoint: /x}
  b: {exaFS: "1.2.3.4@tcp:/gs", mountPoint: /x/y}
""",
])

write("beegfs_config", [
    """config:
  connInterfaces: [level0]
  grpcPort: 8010
  beegfsClientConf:
    logLevel: "config"
    connMgmtdPortTCP: "8008"
fileSystemSpecificConfigs:
  - sysMgmtdHost: fs-a
    config:
      connInterfaces: [level1]
      beegfsClientConf:
        logLevel: "fs-a"
  - sysMgmtdHost: fs-b
    config:
      grpcPort: "9010"
nodeSpecificConfigs:
  - nodeList: [node-1, node-2]
    config:
      connNetFilter: [10.0.0.0/24]
      connTcpOnlyFilter: ["fd00::/64"]
      beegfsClientConf:
        logLevel: "node-1/2"
    fileSystemSpecificConfigs:
      - sysMgmtdHost: fs-a
        config:
          connRDMAInterfaces: [ib0]
          beegfsClientConf:
            connUseRDMA: false
            sysSessionCheckOnClose: 1.5
""",
    "config:\n  beegfsClientConf:\n    sysMgmtdHost: evil\n    connClientPortUDP: \"1\"\n    connAuthFile: /x\n    connInterfacesFile: /y\n    logLevel: \"3\"\n",
    """pfsCsi:
  beegfs:
    mountTool: mount
    beegfsCtlTool: beegfs-ctl
    beegfsTool: beegfs
    clientConfTemplate: /etc/beegfs/beegfs-client.conf
    commandTimeoutSeconds: 30
    mountTimeoutSeconds: 60
    clientMountMode: shared
    nodeUnstageTimeoutSeconds: 120
    deleteWaitSeconds: 10
    contentWaitSeconds: 10
    grpcPort: 8010
    quotas:
      - sysMgmtdHost: 10.0.0.5
        enabled: true
        gidMin: 2000000
        gidMax: 2099999
        storagePool: 1
        inodesPerGib: 100000
    snapshots: {tar: tar, verifyMd5: true}
""",
    "pfsCsi:\n  beegfs:\n    contentWaitSeconds: 315360000\n    deleteWaitSeconds: 0\n",
    "- sysMgmtdHost: 10.0.0.1\n  connAuth: secret1\n- sysMgmtdHost: 10.0.0.2\n  connAuth: c2VjcmV0Mgo=\n  encoding: base64\n- sysMgmtdHost: 10.0.0.3\n  connAuth: |\n    AAEC\n    /w==\n  encoding: base64\n",
    "- sysMgmtdHost: h\n  connAuth: top$ecret!\n  colour: blue\n",
    "- sysMgmtdHost: h\n  tlsCert: |\n    -----BEGIN CERTIFICATE-----\n    MIIB~secret~\n    -----END CERTIFICATE-----\n",
])

CLASSIC = """Disk quotas for prj 1001 (pid 1001):
     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace
    /mnt/lustre       4       0 1048576       -       1       0       0       -
"""
write("lfs_quota_output", [
    CLASSIC,
    """Disk quotas for prj 2002 (pid 2002):
     Filesystem  kbytes  bquota  blimit  bgrace   files  iquota  ilimit  igrace
    /mnt/lustre    2048    1024    4096       -      10      50     100       -
pid 2002 is using default file quota setting
""",
    """Disk quotas for prj 1001 (pid 1001):
     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace
/lustre/exascaler/testfs-zone-2
                 524288       0 1048576       -    1203       0       0       -
""",
    """Disk quotas for prj 7 (pid 7):
     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace
         /exaFS    1200*   1000    1100  6d23h59m       5       0       0       -
""",
    """Disk quotas for prj 1001 (pid 1001):
     Filesystem    used   quota   limit   grace   files   quota   limit   grace
    /mnt/lustre  526.5M      0k      1G       -     123       0       0       -
""",
    "    /mnt/lustre   13.57T      0k  15.5T       -  900000*      0  900000   none\n",
    """Disk quotas for prj 9 (pid 9):
     Filesystem  kbytes   quota   limit   grace   files   quota   limit   grace
    /mnt/lustre     [4]       0    2048       -       1       0       0       -
Some errors happened when getting quota info. Some devices may be not working or deactivated. The data in "[]" is inaccurate.
""",
    "lfs: quotactl failed: No such device\n",
    " 1001 P /mnt/lustre/pvc-1\n",
    "    0 - /mnt/lustre/with space\n",
])


def ctl(id_, text):
    return struct.pack("<I", id_) + text.encode()


write("beegfs_ctl_output", [
    ctl(0, "Entry type: directory\nEntryID: 5-6418D3E1-1\nMetadata node: meta01 [ID: 1]\nStripe pattern details:\n+ Type: RAID0\n+ Chunksize: 512K\n+ Number of storage targets: desired: 4\n+ Storage Pool: 2 (fast)\n"),
    ctl(0, "Entry type: directory\nEntryID: root\nMetadata node: meta_01 [ID: 1]\nStripe pattern details:\n+ Type: RAID0\n+ Chunksize: 1Mi\n+ Number of storage targets: desired: 2\n+ Storage Pool: 1  (Default)\n"),
    ctl(0, "PATH     ENTRY_ID       TYPE       META_NODE  META_MIRROR   STORAGE_POOL  STRIPE_PATTERN   STORAGE_TARGETS  STORAGE_MIRRORS  REMOTE_TARGETS\n/k8s/v   3-67A1B2C3-1   directory  meta:1     (unmirrored)  Default (1)   RAID0 (4x512Ki)  (directory)      (directory)      (none)\n\n"),
    ctl(2001, "name,id,size,hard,files,hard\nvol-a,2001,1048576,10737418240,12,unlimited\n"),
    ctl(2001, "      user/group     ||           size          ||    chunk files    \n     name     |  id  ||    used    |    hard    ||  used   |  hard   \n--------------|------||------------|------------||---------|---------\n          2001|  2001||    1.50 GiB|   10.00 GiB||       34|  1000000\n"),
    ctl(2001, "name,id,size,hard,files,hard\n2001,2001,0,unlimited,0+,unlimited\n"),
    ctl(7, "\nQuota information for storage pool Default (ID: 1):\n\nname,id,size,hard,files,hard\ng,7,100,1000,1,10\n\nQuota information for storage pool fast (ID: 2):\n\nname,id,size,hard,files,hard\ng,7,50,unlimited,2,unlimited\n"),
    ctl(2001, "NAME   ID    TYPE   POOL     SPACE               INODE\n2001   2001  group  Default  1048576/10737418240  12/unlimited\n\n"),
    ctl(2001, "NAME  ID    TYPE   POOL     SPACE             INODE\nvol   2001  group  Default  1.00GiB/2.00GiB   ?/100\n"),
    ctl(2001, "NAME  ID    TYPE   POOL     SPACE                      INODE\ng     2001  group  Default  5/9223372036854775807      0/\u221e\n"),
    ctl(0, "0\n0 Byte\n512K\n512Ki\n1 MiB\n1.50 GiB\n2T\n17 B\n"),
    ctl(0, "rpc error: code = Unavailable desc = \"transport: authentication handshake failed: tls: failed to verify certificate: x509: unknown authority\"\n"),
])

write("mountinfo", [
    b"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"
    b"36 22 0:45 / /mnt/lustre rw,nosuid shared:20 master:3 - lustre 10.0.0.1@tcp:/testfs rw,flock,lazystatfs\n"
    b"37 22 0:46 /vol\\040one /var/lib/kubelet/pods/a\\011b/mount ro,relatime - beegfs beegfs_nodev rw,cfgFile=/etc/beegfs/x.conf\n"
    b"38 22 0:47 / /back\\134slash\\012nl rw - tmpfs tmpfs\n",
    b"garbage\nx 1 8:1 / / rw - ext4 /dev/sda1 rw\n5 1 81 / / rw - ext4 /dev/sda1 rw\n"
    b"5 1 8:1 / / rw shared:1 ext4 /dev/sda1 rw\n5 1 8:1 / / rw - ext4\n5 1 8:1 / / rw - ext4 a b c\n"
    b"6 1 8:1 / /ok rw - ext4 /dev/sda1 rw\n",
    b"40 22 0:48 /k8s/pvc-1 /var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/pvc-1/mount rw,relatime shared:30 - lustre 10.0.0.1@tcp:/testfs rw\n",
    b"1 0 0:1 /a\\777\\101 /b - - fs src\n",
])

write("mount_options", [
    "flock,user_xattr\nnoatime,localflock\nro,nouser_xattr",
    "ro, noflock\n\nuser_xattr",
    "network=tcp2,lazystatfs\nrw",
    "remount\nbind\nmake-shared\nX-mount.mkdir\nskpath=/etc/keys\nopt=..",
    "context=\"system_u\"\n=x\na b",
])
