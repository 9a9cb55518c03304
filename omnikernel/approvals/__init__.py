"""Where an approval lives. `decide`: the one pure decision from a request and the policy's
verdict; `pending`: asks waiting for a person, first answer wins, whatever answers (the card,
the share page through `from_share`, a terminal); `after_restart`: asks a dead kernel left
waiting, shown again and carried out once, given the session as an interface it never
imports."""
