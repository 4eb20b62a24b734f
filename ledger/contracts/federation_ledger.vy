# pragma version 0.4.3
"""
@title MedFedChain federation ledger
@notice The state machine of a federated-learning round, as `core.federation.channel` states it:
        the coordinator opens a round; every registered hospital commits once before the commit
        deadline; anyone closes the commits; every hospital votes once on the candidates before
        the vote deadline; anyone decides (accepted iff strictly more than half of ALL hospitals
        registered at the opening accept); the coordinator finalises with exactly the accepted
        candidates, or aborts (anyone may abort once the final deadline passed).
@dev    The admin (the consortium operator) manages the registry, only between rounds, so that
        authority positions and the registered count hold for the whole round; the coordinator
        is its own account, not a hospital. Per-hospital state is kept to bitmaps indexed by
        authority position and small packed counters; hashes, sample counts, scores digests
        and share commitments live in events only, since the contract never reads them again.
        Round data is keyed by a round id: an aborted attempt stays on record and its number
        may be opened again under a new id.
"""

MAX_AUTHORITIES: constant(uint256) = 64
MAX_SHARES: constant(uint256) = 64

PHASE_NONE: constant(uint256) = 0
PHASE_COMMIT: constant(uint256) = 1
PHASE_VOTE: constant(uint256) = 2
PHASE_AGGREGATE: constant(uint256) = 3
PHASE_FINAL: constant(uint256) = 4
PHASE_ABORTED: constant(uint256) = 5

# Candidate order and accept counts are packed 8 bits per candidate, 32 per word, two words.
LANES: constant(uint256) = 32
LANE_MASK: constant(uint256) = 255


struct Round:
    number: uint256
    phase: uint256
    previousHash: bytes32
    policyDigest: bytes32
    registered: uint256
    commitDeadline: uint256
    voteDeadline: uint256
    finalDeadline: uint256
    verified: bool
    openedBlock: uint256
    committed: uint256  # bitmap by authority position
    candidateCount: uint256
    voted: uint256  # bitmap by authority position
    accepted: uint256  # bitmap by candidate index (commit order), once decided
    globalHash: bytes32


struct Member:
    account: address
    hospitalId: String[64]
    storeUrl: String[256]


event AuthorityAdded:
    account: indexed(address)
    hospitalId: String[64]
    storeUrl: String[256]

event AuthorityRemoved:
    account: indexed(address)
    hospitalId: String[64]

event CoordinatorChanged:
    coordinator: indexed(address)
    storeUrl: String[256]

event RoundOpened:
    roundNumber: indexed(uint256)
    roundId: indexed(uint256)
    previousHash: bytes32
    policyDigest: bytes32
    registered: uint256
    commitDeadline: uint256
    voteDeadline: uint256
    finalDeadline: uint256
    verified: bool

event Committed:
    roundNumber: indexed(uint256)
    roundId: indexed(uint256)
    hospital: indexed(address)
    modelHash: bytes32
    numSamples: uint256
    shares: DynArray[bytes32, MAX_SHARES]

event CommitsClosed:
    roundNumber: indexed(uint256)
    roundId: indexed(uint256)
    candidates: DynArray[address, MAX_AUTHORITIES]  # in commit order
    dropouts: DynArray[address, MAX_AUTHORITIES]  # registered without a commitment

event Voted:
    roundNumber: indexed(uint256)
    roundId: indexed(uint256)
    validator: indexed(address)
    acceptedBitmap: uint256  # bit i: the i-th candidate in commit order
    scoresHash: bytes32

event Decided:
    roundNumber: indexed(uint256)
    roundId: indexed(uint256)
    registered: uint256
    acceptedBitmap: uint256
    accepts: DynArray[uint256, MAX_AUTHORITIES]  # per candidate, in commit order
    rejects: DynArray[uint256, MAX_AUTHORITIES]
    abstainers: DynArray[address, MAX_AUTHORITIES]
    unverified: bool

event RoundFinalized:
    roundNumber: indexed(uint256)
    roundId: indexed(uint256)
    globalHash: bytes32
    contributors: DynArray[address, MAX_AUTHORITIES]

event RoundAborted:
    roundNumber: indexed(uint256)
    roundId: indexed(uint256)
    reason: String[256]


admin: public(address)
coordinator: public(address)
coordinatorStoreUrl: public(String[256])

authorities: public(DynArray[address, MAX_AUTHORITIES])
positionOf: HashMap[address, uint256]  # authority position + 1; 0: not registered
# Kept after removal, so past rounds' accounts still read as the hospitals they were.
hospitalIdOf: public(HashMap[address, String[64]])
storeUrlOf: public(HashMap[address, String[256]])
accountOfHospital: public(HashMap[bytes32, address])  # keccak256(hospital id) -> account

roundCount: public(uint256)
openRoundId: public(uint256)
rounds: public(HashMap[uint256, Round])
latestRoundIdOf: public(HashMap[uint256, uint256])  # round number -> its latest round id
order: HashMap[uint256, uint256[2]]  # round id -> authority position of each candidate, packed
tally: HashMap[uint256, uint256[2]]  # round id -> accept count of each candidate, packed


@deploy
def __init__():
    self.admin = msg.sender


@internal
@view
def _open_round(round_number: uint256) -> uint256:
    # The latest attempt of a number is the open round iff its phase is one of the open three;
    # reading it this way costs one storage read less per commit and vote than `openRoundId`.
    round_id: uint256 = self.latestRoundIdOf[round_number]
    phase: uint256 = self.rounds[round_id].phase
    assert phase != PHASE_FINAL, "round is final"
    assert phase != PHASE_NONE and phase != PHASE_ABORTED, "round is not open"
    return round_id


@internal
@view
def _position(account: address) -> uint256:
    position: uint256 = self.positionOf[account]
    assert position != 0, "not a registered hospital"
    return position - 1


@internal
@pure
def _full(registered: uint256) -> uint256:
    return (1 << registered) - 1


@internal
@pure
def _lane(words: uint256[2], index: uint256) -> uint256:
    return (words[index // LANES] >> (8 * (index % LANES))) & LANE_MASK


# Registry


@external
def addAuthority(account: address, hospital_id: String[64], store_url: String[256]):
    """@notice Registers a hospital with its account and the URL its model store answers at."""
    assert msg.sender == self.admin, "only the admin"
    assert self.openRoundId == 0, "a round is open"
    assert account != empty(address), "zero account"
    assert len(hospital_id) > 0, "empty hospital id"
    assert account != self.coordinator, "account is the coordinator"
    assert self.positionOf[account] == 0, "account already registered"
    key: bytes32 = keccak256(hospital_id)
    assert self.accountOfHospital[key] == empty(address), "hospital already registered"
    assert len(self.authorities) < MAX_AUTHORITIES, "registry is full"
    self.authorities.append(account)
    self.positionOf[account] = len(self.authorities)
    self.hospitalIdOf[account] = hospital_id
    self.storeUrlOf[account] = store_url
    self.accountOfHospital[key] = account
    log AuthorityAdded(account=account, hospitalId=hospital_id, storeUrl=store_url)


@external
def removeAuthority(account: address):
    """@notice Removes a hospital from the registry; it can no longer commit or vote."""
    assert msg.sender == self.admin, "only the admin"
    assert self.openRoundId == 0, "a round is open"
    position: uint256 = self._position(account)
    last: address = self.authorities.pop()
    if last != account:
        self.authorities[position] = last
        self.positionOf[last] = position + 1
    self.positionOf[account] = 0
    hospital_id: String[64] = self.hospitalIdOf[account]
    self.accountOfHospital[keccak256(hospital_id)] = empty(address)
    self.storeUrlOf[account] = ""
    log AuthorityRemoved(account=account, hospitalId=hospital_id)


@external
def setCoordinator(account: address, store_url: String[256]):
    """@notice Names the coordinator's account (not a hospital's) and its model store URL."""
    assert msg.sender == self.admin, "only the admin"
    assert self.positionOf[account] == 0, "the coordinator cannot be a hospital"
    self.coordinator = account
    self.coordinatorStoreUrl = store_url
    log CoordinatorChanged(coordinator=account, storeUrl=store_url)


@external
@view
def authorityCount() -> uint256:
    return len(self.authorities)


@external
@view
def members() -> DynArray[Member, MAX_AUTHORITIES]:
    """@notice Every registered hospital with its id and model store URL, in position order."""
    out: DynArray[Member, MAX_AUTHORITIES] = []
    for account: address in self.authorities:
        out.append(Member(account=account, hospitalId=self.hospitalIdOf[account], storeUrl=self.storeUrlOf[account]))
    return out


# Rounds


@external
def openRound(
    round_number: uint256,
    previous_hash: bytes32,
    policy_digest: bytes32,
    commit_deadline: uint256,
    vote_deadline: uint256,
    final_deadline: uint256,
    verified: bool,
) -> uint256:
    """@notice Opens a round on the current global model; deadlines are block timestamps."""
    assert msg.sender == self.coordinator, "only the coordinator"
    open_id: uint256 = self.openRoundId
    if open_id != 0:
        current: Round = self.rounds[open_id]
        assert current.number != round_number or current.previousHash != previous_hash, "round is already open"
        raise "another round is open"
    assert self.rounds[self.latestRoundIdOf[round_number]].phase != PHASE_FINAL, "round is final"
    registered: uint256 = len(self.authorities)
    assert registered > 0, "no hospitals registered"
    assert block.timestamp < commit_deadline, "commit deadline is not in the future"
    assert commit_deadline <= vote_deadline and vote_deadline <= final_deadline, "deadlines out of order"
    round_id: uint256 = self.roundCount + 1
    self.roundCount = round_id
    self.openRoundId = round_id
    self.latestRoundIdOf[round_number] = round_id
    self.rounds[round_id] = Round(
        number=round_number,
        phase=PHASE_COMMIT,
        previousHash=previous_hash,
        policyDigest=policy_digest,
        registered=registered,
        commitDeadline=commit_deadline,
        voteDeadline=vote_deadline,
        finalDeadline=final_deadline,
        verified=verified,
        openedBlock=block.number,
        committed=0,
        candidateCount=0,
        voted=0,
        accepted=0,
        globalHash=empty(bytes32),
    )
    log RoundOpened(
        roundNumber=round_number,
        roundId=round_id,
        previousHash=previous_hash,
        policyDigest=policy_digest,
        registered=registered,
        commitDeadline=commit_deadline,
        voteDeadline=vote_deadline,
        finalDeadline=final_deadline,
        verified=verified,
    )
    return round_id


@external
def commit(round_number: uint256, model_hash: bytes32, num_samples: uint256, shares: DynArray[bytes32, MAX_SHARES]):
    """@notice Binds the sender's hospital to its candidate model and its SMPC share commitments."""
    round_id: uint256 = self._open_round(round_number)
    position: uint256 = self._position(msg.sender)
    bit: uint256 = 1 << position
    committed: uint256 = self.rounds[round_id].committed
    assert committed & bit == 0, "already committed"
    assert self.rounds[round_id].phase == PHASE_COMMIT, "commits closed"
    assert block.timestamp < self.rounds[round_id].commitDeadline, "commit deadline passed"
    assert model_hash != empty(bytes32), "empty model hash"
    index: uint256 = self.rounds[round_id].candidateCount
    self.rounds[round_id].committed = committed | bit
    self.rounds[round_id].candidateCount = index + 1
    self.order[round_id][index // LANES] |= position << (8 * (index % LANES))
    log Committed(
        roundNumber=round_number,
        roundId=round_id,
        hospital=msg.sender,
        modelHash=model_hash,
        numSamples=num_samples,
        shares=shares,
    )


@external
def closeCommits(round_number: uint256):
    """@notice Fixes the candidates once the commit deadline passed or every hospital committed."""
    round_id: uint256 = self._open_round(round_number)
    r: Round = self.rounds[round_id]
    assert r.phase == PHASE_COMMIT, "commits already closed"
    assert block.timestamp >= r.commitDeadline or r.committed == self._full(r.registered), "commit deadline not reached"
    order: uint256[2] = self.order[round_id]
    candidates: DynArray[address, MAX_AUTHORITIES] = []
    for i: uint256 in range(MAX_AUTHORITIES):
        if i >= r.candidateCount:
            break
        candidates.append(self.authorities[self._lane(order, i)])
    dropouts: DynArray[address, MAX_AUTHORITIES] = []
    for i: uint256 in range(MAX_AUTHORITIES):
        if i >= r.registered:
            break
        if r.committed & (1 << i) == 0:
            dropouts.append(self.authorities[i])
    log CommitsClosed(roundNumber=round_number, roundId=round_id, candidates=candidates, dropouts=dropouts)
    if r.candidateCount == 0:
        self._abort(round_number, round_id, "no hospital committed an update")
        return
    if r.verified:
        self.rounds[round_id].phase = PHASE_VOTE
        return
    # The no-verification baseline: every candidate is taken, unvoted, on record as such.
    everyone: uint256 = self._full(r.candidateCount)
    self.rounds[round_id].phase = PHASE_AGGREGATE
    self.rounds[round_id].accepted = everyone
    zeros: DynArray[uint256, MAX_AUTHORITIES] = []
    for i: uint256 in range(MAX_AUTHORITIES):
        if i >= r.candidateCount:
            break
        zeros.append(0)
    log Decided(
        roundNumber=round_number,
        roundId=round_id,
        registered=r.registered,
        acceptedBitmap=everyone,
        accepts=zeros,
        rejects=zeros,
        abstainers=[],
        unverified=True,
    )


@external
def vote(round_number: uint256, accepted_bitmap: uint256, scores_hash: bytes32):
    """@notice Casts the sender's ballot: bit i accepts the i-th candidate, every other one is rejected."""
    round_id: uint256 = self._open_round(round_number)
    position: uint256 = self._position(msg.sender)
    bit: uint256 = 1 << position
    voted: uint256 = self.rounds[round_id].voted
    assert voted & bit == 0, "already voted"
    assert self.rounds[round_id].phase == PHASE_VOTE, "voting closed"
    assert block.timestamp < self.rounds[round_id].voteDeadline, "vote deadline passed"
    count: uint256 = self.rounds[round_id].candidateCount
    assert accepted_bitmap >> count == 0, "unknown candidate"
    self.rounds[round_id].voted = voted | bit
    low: uint256 = 0
    high: uint256 = 0
    for i: uint256 in range(MAX_AUTHORITIES):
        if i >= count:
            break
        if accepted_bitmap & (1 << i) != 0:
            if i < LANES:
                low += 1 << (8 * i)
            else:
                high += 1 << (8 * (i - LANES))
    if low != 0:
        self.tally[round_id][0] += low
    if high != 0:
        self.tally[round_id][1] += high
    log Voted(
        roundNumber=round_number,
        roundId=round_id,
        validator=msg.sender,
        acceptedBitmap=accepted_bitmap,
        scoresHash=scores_hash,
    )


@external
def decide(round_number: uint256):
    """@notice Decides every candidate once the vote deadline passed or every hospital voted."""
    round_id: uint256 = self._open_round(round_number)
    r: Round = self.rounds[round_id]
    assert r.phase != PHASE_AGGREGATE, "already decided"
    assert r.phase == PHASE_VOTE, "commits not closed"
    assert block.timestamp >= r.voteDeadline or r.voted == self._full(r.registered), "vote deadline not reached"
    ballots: uint256 = 0
    abstainers: DynArray[address, MAX_AUTHORITIES] = []
    for i: uint256 in range(MAX_AUTHORITIES):
        if i >= r.registered:
            break
        if r.voted & (1 << i) != 0:
            ballots += 1
        else:
            abstainers.append(self.authorities[i])
    tally: uint256[2] = self.tally[round_id]
    accepts: DynArray[uint256, MAX_AUTHORITIES] = []
    rejects: DynArray[uint256, MAX_AUTHORITIES] = []
    accepted: uint256 = 0
    for i: uint256 in range(MAX_AUTHORITIES):
        if i >= r.candidateCount:
            break
        yes: uint256 = self._lane(tally, i)
        accepts.append(yes)
        rejects.append(ballots - yes)
        if 2 * yes > r.registered:
            accepted |= 1 << i
    self.rounds[round_id].phase = PHASE_AGGREGATE
    self.rounds[round_id].accepted = accepted
    log Decided(
        roundNumber=round_number,
        roundId=round_id,
        registered=r.registered,
        acceptedBitmap=accepted,
        accepts=accepts,
        rejects=rejects,
        abstainers=abstainers,
        unverified=False,
    )


@external
def finalizeRound(round_number: uint256, global_hash: bytes32, contributors: DynArray[address, MAX_AUTHORITIES]):
    """@notice Seals a decided round with the new global model; contributors must be exactly the accepted."""
    assert msg.sender == self.coordinator, "only the coordinator"
    round_id: uint256 = self._open_round(round_number)
    r: Round = self.rounds[round_id]
    assert r.phase == PHASE_AGGREGATE, "round not decided"
    assert global_hash != empty(bytes32), "empty global hash"
    # candidate index + 1 of each authority position, from the packed commit order
    order: uint256[2] = self.order[round_id]
    index_of: uint256[MAX_AUTHORITIES] = empty(uint256[MAX_AUTHORITIES])
    for i: uint256 in range(MAX_AUTHORITIES):
        if i >= r.candidateCount:
            break
        index_of[self._lane(order, i)] = i + 1
    seen: uint256 = 0
    for contributor: address in contributors:
        position: uint256 = self.positionOf[contributor]
        assert position != 0 and index_of[position - 1] != 0, "contributor was not a candidate"
        bit: uint256 = 1 << (index_of[position - 1] - 1)
        assert r.accepted & bit != 0, "contributor was not accepted"
        assert seen & bit == 0, "duplicate contributor"
        seen |= bit
    assert seen == r.accepted, "contributors must equal the accepted models"
    self.rounds[round_id].phase = PHASE_FINAL
    self.rounds[round_id].globalHash = global_hash
    self.openRoundId = 0
    log RoundFinalized(roundNumber=round_number, roundId=round_id, globalHash=global_hash, contributors=contributors)


@external
def abortRound(round_number: uint256, reason: String[256]):
    """@notice Abandons the open round: the coordinator at any time, anyone once its final deadline passed."""
    assert self.rounds[self.latestRoundIdOf[round_number]].phase != PHASE_ABORTED, "already aborted"
    round_id: uint256 = self._open_round(round_number)
    deadline: uint256 = self.rounds[round_id].finalDeadline
    assert msg.sender == self.coordinator or block.timestamp >= deadline, "only the coordinator before the deadline"
    self._abort(round_number, round_id, reason)


@internal
def _abort(round_number: uint256, round_id: uint256, reason: String[256]):
    self.rounds[round_id].phase = PHASE_ABORTED
    self.openRoundId = 0
    log RoundAborted(roundNumber=round_number, roundId=round_id, reason=reason)


@external
@view
def candidatesOf(round_id: uint256) -> DynArray[address, MAX_AUTHORITIES]:
    """@notice The round's candidates in commit order (valid while the registry is as it was)."""
    order: uint256[2] = self.order[round_id]
    out: DynArray[address, MAX_AUTHORITIES] = []
    for i: uint256 in range(MAX_AUTHORITIES):
        if i >= self.rounds[round_id].candidateCount:
            break
        out.append(self.authorities[self._lane(order, i)])
    return out
