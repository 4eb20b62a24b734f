# pragma version 0.4.3
"""
@title MedFedChain federation ledger
@notice The consortium's record of federated-learning rounds: which hospitals are authorities,
        what each committed to, how each voted, what was accepted and what the new global model is.
@dev    The admin (the consortium operator) manages the registry and may designate one
        registered hospital as coordinator; the admin or the coordinator opens, decides,
        finalises and aborts rounds. Only registered hospitals commit and vote. A candidate is
        accepted when strictly more than half of ALL authorities registered when its round
        opened vote accept. The registry is frozen while a round is open, so that count holds.
        Round data is keyed by an internal round id: an aborted attempt of a round number stays
        on record and the number may be opened again under a new id; a later federation run
        (a new experiment on the same ledger) numbers its rounds from 1 again.
"""

MAX_AUTHORITIES: constant(uint256) = 64
MAX_SHARES: constant(uint256) = 64

STATE_NONE: constant(uint256) = 0
STATE_OPEN: constant(uint256) = 1
STATE_FINALIZED: constant(uint256) = 2
STATE_ABORTED: constant(uint256) = 3

VOTE_NONE: constant(uint256) = 0
VOTE_ACCEPT: constant(uint256) = 1
VOTE_REJECT: constant(uint256) = 2


struct Round:
    number: uint256
    state: uint256
    previousHash: bytes32
    policyDigest: bytes32
    registered: uint256
    decided: bool
    acceptedCount: uint256
    globalHash: bytes32
    unverified: bool


struct Commitment:
    modelHash: bytes32
    sharesDigest: bytes32
    shareCount: uint256


struct Ballot:
    candidate: address
    accept: bool
    correct: uint256
    total: uint256
    cosine: int256
    norm: uint256
    referenceAccuracy: uint256
    referenceNorm: uint256


struct Tally:
    candidate: address
    modelHash: bytes32
    accepts: uint256
    rejects: uint256
    accepted: bool


event AuthorityAdded:
    account: indexed(address)
    hospitalId: String[64]

event AuthorityRemoved:
    account: indexed(address)
    hospitalId: String[64]

event CoordinatorChanged:
    coordinator: indexed(address)

event RoundOpened:
    roundNumber: indexed(uint256)
    roundId: indexed(uint256)
    previousHash: bytes32
    policyDigest: bytes32
    registered: uint256

event Committed:
    roundNumber: indexed(uint256)
    roundId: indexed(uint256)
    hospital: indexed(address)
    modelHash: bytes32
    sharesDigest: bytes32
    shares: DynArray[bytes32, MAX_SHARES]

event Voted:
    roundId: indexed(uint256)
    candidate: indexed(address)
    validator: indexed(address)
    accept: bool
    correct: uint256
    total: uint256
    cosine: int256
    norm: uint256
    referenceAccuracy: uint256
    referenceNorm: uint256

event Decided:
    roundId: indexed(uint256)
    candidate: indexed(address)
    modelHash: bytes32
    accepts: uint256
    rejects: uint256
    registered: uint256
    accepted: bool

event VerificationSkipped:
    roundNumber: indexed(uint256)
    roundId: indexed(uint256)

event FailureRecorded:
    roundId: indexed(uint256)
    hospitalId: String[64]
    stage: String[32]
    message: String[256]

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

authorities: public(DynArray[address, MAX_AUTHORITIES])
isAuthority: public(HashMap[address, bool])
hospitalIdOf: public(HashMap[address, String[64]])
accountOfHospital: public(HashMap[bytes32, address])  # keccak256(hospital id) -> account

roundCount: public(uint256)
openRoundId: public(uint256)
rounds: public(HashMap[uint256, Round])
latestRoundIdOf: public(HashMap[uint256, uint256])  # round number -> its latest round id
finalizedRoundIdOf: public(HashMap[uint256, uint256])  # round number -> its latest finalised round id
candidates: HashMap[uint256, DynArray[address, MAX_AUTHORITIES]]
contributors: HashMap[uint256, DynArray[address, MAX_AUTHORITIES]]

commitments: public(HashMap[uint256, HashMap[address, Commitment]])
voteOf: public(HashMap[uint256, HashMap[address, HashMap[address, uint256]]])
accepts: public(HashMap[uint256, HashMap[address, uint256]])
rejects: public(HashMap[uint256, HashMap[address, uint256]])
accepted: public(HashMap[uint256, HashMap[address, bool]])
contributed: public(HashMap[uint256, HashMap[address, bool]])
ballotCount: public(HashMap[uint256, uint256])


@deploy
def __init__():
    self.admin = msg.sender


@internal
@view
def _only_operator():
    assert msg.sender == self.admin or (
        msg.sender == self.coordinator and self.coordinator != empty(address)
    ), "only the admin or the coordinator"


@internal
@view
def _open_round(round_number: uint256) -> uint256:
    round_id: uint256 = self.openRoundId
    assert round_id != 0 and self.rounds[round_id].number == round_number, "round is not open"
    return round_id


# Registry


@external
def addAuthority(account: address, hospital_id: String[64]):
    """@notice Registers a hospital as an authority with one account."""
    assert msg.sender == self.admin, "only the admin"
    assert self.openRoundId == 0, "a round is open"
    assert account != empty(address), "zero account"
    assert len(hospital_id) > 0, "empty hospital id"
    assert len(self.authorities) < MAX_AUTHORITIES, "registry is full"
    assert not self.isAuthority[account], "account already registered"
    key: bytes32 = keccak256(hospital_id)
    assert self.accountOfHospital[key] == empty(address), "hospital already registered"
    self.authorities.append(account)
    self.isAuthority[account] = True
    self.hospitalIdOf[account] = hospital_id
    self.accountOfHospital[key] = account
    log AuthorityAdded(account=account, hospitalId=hospital_id)


@external
def removeAuthority(account: address):
    """@notice Removes a hospital from the registry; it can no longer commit or vote."""
    assert msg.sender == self.admin, "only the admin"
    assert self.openRoundId == 0, "a round is open"
    assert self.isAuthority[account], "not an authority"
    count: uint256 = len(self.authorities)
    for i: uint256 in range(MAX_AUTHORITIES):
        if i >= count:
            break
        if self.authorities[i] == account:
            self.authorities[i] = self.authorities[count - 1]
            self.authorities.pop()
            break
    hospital_id: String[64] = self.hospitalIdOf[account]
    self.isAuthority[account] = False
    self.accountOfHospital[keccak256(hospital_id)] = empty(address)
    self.hospitalIdOf[account] = ""
    if self.coordinator == account:
        self.coordinator = empty(address)
        log CoordinatorChanged(coordinator=empty(address))
    log AuthorityRemoved(account=account, hospitalId=hospital_id)


@external
def setCoordinator(account: address):
    """@notice Designates a registered hospital (or nobody) to run rounds besides the admin."""
    assert msg.sender == self.admin, "only the admin"
    assert account == empty(address) or self.isAuthority[account], "coordinator must be an authority"
    self.coordinator = account
    log CoordinatorChanged(coordinator=account)


@external
@view
def authorityCount() -> uint256:
    return len(self.authorities)


@external
@view
def listAuthorities() -> DynArray[address, MAX_AUTHORITIES]:
    return self.authorities


# Rounds


@external
def openRound(round_number: uint256, previous_hash: bytes32, policy_digest: bytes32) -> uint256:
    """@notice Opens a round on the current global model under a verification policy."""
    self._only_operator()
    assert self.openRoundId == 0, "another round is open"
    registered: uint256 = len(self.authorities)
    assert registered > 0, "no authorities registered"
    round_id: uint256 = self.roundCount + 1
    self.roundCount = round_id
    self.openRoundId = round_id
    self.latestRoundIdOf[round_number] = round_id
    self.rounds[round_id] = Round(
        number=round_number,
        state=STATE_OPEN,
        previousHash=previous_hash,
        policyDigest=policy_digest,
        registered=registered,
        decided=False,
        acceptedCount=0,
        globalHash=empty(bytes32),
        unverified=False,
    )
    log RoundOpened(
        roundNumber=round_number,
        roundId=round_id,
        previousHash=previous_hash,
        policyDigest=policy_digest,
        registered=registered,
    )
    return round_id


@external
def commit(round_number: uint256, model_hash: bytes32, shares: DynArray[bytes32, MAX_SHARES]):
    """@notice Binds the sender's hospital to its candidate model and its SMPC share commitments."""
    round_id: uint256 = self._open_round(round_number)
    assert self.isAuthority[msg.sender], "not an authority"
    assert model_hash != empty(bytes32), "empty model hash"
    assert self.commitments[round_id][msg.sender].modelHash == empty(bytes32), "already committed"
    assert not self.rounds[round_id].decided, "voting closed"
    digest: bytes32 = keccak256(abi_encode(shares))
    self.commitments[round_id][msg.sender] = Commitment(
        modelHash=model_hash, sharesDigest=digest, shareCount=len(shares)
    )
    self.candidates[round_id].append(msg.sender)
    log Committed(
        roundNumber=round_number,
        roundId=round_id,
        hospital=msg.sender,
        modelHash=model_hash,
        sharesDigest=digest,
        shares=shares,
    )


@external
def vote(round_number: uint256, ballots: DynArray[Ballot, MAX_AUTHORITIES]):
    """@notice Casts the sender's votes, with the scores behind them, on committed candidates."""
    round_id: uint256 = self._open_round(round_number)
    assert self.isAuthority[msg.sender], "not an authority"
    assert not self.rounds[round_id].decided, "voting closed"
    assert len(ballots) > 0, "no ballots"
    for ballot: Ballot in ballots:
        assert self.commitments[round_id][ballot.candidate].modelHash != empty(bytes32), "candidate did not commit"
        assert self.voteOf[round_id][ballot.candidate][msg.sender] == VOTE_NONE, "already voted"
        assert ballot.correct <= ballot.total, "correct exceeds total"
        self.ballotCount[round_id] += 1
        if ballot.accept:
            self.voteOf[round_id][ballot.candidate][msg.sender] = VOTE_ACCEPT
            self.accepts[round_id][ballot.candidate] += 1
        else:
            self.voteOf[round_id][ballot.candidate][msg.sender] = VOTE_REJECT
            self.rejects[round_id][ballot.candidate] += 1
        log Voted(
            roundId=round_id,
            candidate=ballot.candidate,
            validator=msg.sender,
            accept=ballot.accept,
            correct=ballot.correct,
            total=ballot.total,
            cosine=ballot.cosine,
            norm=ballot.norm,
            referenceAccuracy=ballot.referenceAccuracy,
            referenceNorm=ballot.referenceNorm,
        )


@external
def decide(round_number: uint256):
    """@notice Closes voting and decides every candidate by the majority of registered authorities."""
    self._only_operator()
    round_id: uint256 = self._open_round(round_number)
    assert not self.rounds[round_id].decided, "already decided"
    registered: uint256 = self.rounds[round_id].registered
    accepted_count: uint256 = 0
    for candidate: address in self.candidates[round_id]:
        yes: uint256 = self.accepts[round_id][candidate]
        is_accepted: bool = 2 * yes > registered
        if is_accepted:
            self.accepted[round_id][candidate] = True
            accepted_count += 1
        log Decided(
            roundId=round_id,
            candidate=candidate,
            modelHash=self.commitments[round_id][candidate].modelHash,
            accepts=yes,
            rejects=self.rejects[round_id][candidate],
            registered=registered,
            accepted=is_accepted,
        )
    self.rounds[round_id].decided = True
    self.rounds[round_id].acceptedCount = accepted_count


@external
def decideUnverified(round_number: uint256):
    """@notice The no-verification baseline: every committed candidate is taken, unvoted, on record as such."""
    self._only_operator()
    round_id: uint256 = self._open_round(round_number)
    assert not self.rounds[round_id].decided, "already decided"
    assert self.ballotCount[round_id] == 0, "votes were cast in this round"
    registered: uint256 = self.rounds[round_id].registered
    accepted_count: uint256 = 0
    log VerificationSkipped(roundNumber=round_number, roundId=round_id)  # before the decisions it explains
    for candidate: address in self.candidates[round_id]:
        self.accepted[round_id][candidate] = True
        accepted_count += 1
        log Decided(
            roundId=round_id,
            candidate=candidate,
            modelHash=self.commitments[round_id][candidate].modelHash,
            accepts=0,
            rejects=0,
            registered=registered,
            accepted=True,
        )
    self.rounds[round_id].decided = True
    self.rounds[round_id].unverified = True
    self.rounds[round_id].acceptedCount = accepted_count


@external
def recordFailure(round_number: uint256, hospital_id: String[64], stage: String[32], message: String[256]):
    """@notice Records that a hospital dropped out of the open round, and where."""
    self._only_operator()
    round_id: uint256 = self._open_round(round_number)
    log FailureRecorded(roundId=round_id, hospitalId=hospital_id, stage=stage, message=message)


@external
def finalizeRound(
    round_number: uint256, global_hash: bytes32, round_contributors: DynArray[address, MAX_AUTHORITIES]
):
    """@notice Seals a decided round with the new global model; contributors must be exactly the accepted."""
    self._only_operator()
    round_id: uint256 = self._open_round(round_number)
    assert self.rounds[round_id].decided, "round not decided"
    assert global_hash != empty(bytes32), "empty global hash"
    assert len(round_contributors) == self.rounds[round_id].acceptedCount, "contributors must equal the accepted models"
    for contributor: address in round_contributors:
        assert self.accepted[round_id][contributor], "contributor was not accepted"
        assert not self.contributed[round_id][contributor], "duplicate contributor"
        self.contributed[round_id][contributor] = True
    self.contributors[round_id] = round_contributors
    self.rounds[round_id].state = STATE_FINALIZED
    self.rounds[round_id].globalHash = global_hash
    self.finalizedRoundIdOf[round_number] = round_id
    self.openRoundId = 0
    log RoundFinalized(
        roundNumber=round_number, roundId=round_id, globalHash=global_hash, contributors=round_contributors
    )


@external
def abortRound(round_number: uint256, reason: String[256]):
    """@notice Abandons the open round; nothing of it is applied and its record stays as is."""
    self._only_operator()
    round_id: uint256 = self._open_round(round_number)
    self.rounds[round_id].state = STATE_ABORTED
    self.openRoundId = 0
    log RoundAborted(roundNumber=round_number, roundId=round_id, reason=reason)


@external
@view
def candidatesOf(round_id: uint256) -> DynArray[address, MAX_AUTHORITIES]:
    return self.candidates[round_id]


@external
@view
def contributorsOf(round_id: uint256) -> DynArray[address, MAX_AUTHORITIES]:
    return self.contributors[round_id]


@external
@view
def votesBy(round_id: uint256, validator: address) -> DynArray[uint256, MAX_AUTHORITIES]:
    """@notice The validator's vote (0 none, 1 accept, 2 reject) on each candidate, in commit order."""
    out: DynArray[uint256, MAX_AUTHORITIES] = []
    for candidate: address in self.candidates[round_id]:
        out.append(self.voteOf[round_id][candidate][validator])
    return out


@external
@view
def talliesOf(round_id: uint256) -> DynArray[Tally, MAX_AUTHORITIES]:
    """@notice Each candidate's model hash, vote counts and (once decided) acceptance, in commit order."""
    out: DynArray[Tally, MAX_AUTHORITIES] = []
    for candidate: address in self.candidates[round_id]:
        out.append(Tally(
            candidate=candidate,
            modelHash=self.commitments[round_id][candidate].modelHash,
            accepts=self.accepts[round_id][candidate],
            rejects=self.rejects[round_id][candidate],
            accepted=self.accepted[round_id][candidate],
        ))
    return out
