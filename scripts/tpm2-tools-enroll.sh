#!/bin/sh
# Enroll a Linux device's TPM with devtrust using tpm2-tools, curl and jq: no devtrust code.
#
#   DEVTRUST_API_URL     where `devtrust serve` answers, e.g. https://devtrust.example:8443
#   DEVTRUST_USER_TOKEN  the user's credential (`devtrust users add` printed it)
#   ENROLL_TOKEN         the token `devtrust devices add --enroll` printed for this device
#   ASSET_TAG            the device's asset tag as registered (its serial number)
#   TPM2TOOLS_TCTI       the TPM, e.g. device:/dev/tpmrm0 (default) or swtpm:port=2321
set -eu
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
b64() { base64 -w0 "$1"; }
# With no resource manager between the tools and the TPM (swtpm's socket, /dev/tpm0), the
# objects each tool loads stay loaded: flush them after each step.
flush() { tpm2_flushcontext --transient-object; }
post() {  # post PATH FILE: POST the JSON in FILE, print the answer; a refusal ends the script
  curl --silent --show-error --fail-with-body -H "Authorization: Bearer $DEVTRUST_USER_TOKEN" \
    -H 'Content-Type: application/json' --data-binary "@$2" "$DEVTRUST_API_URL$1"
}

flush
# 1. The EK (the TCG template for RSA-2048) and its certificate, kept in NV by the maker.
tpm2_createek -c ek.ctx -G rsa -u ek.pub > /dev/null     # ek.pub: TPM2B_PUBLIC
tpm2_nvread -C o -o ek.der 0x01c00002 2> /dev/null        # the RSA EK certificate
flush

# 2. An attestation key: a restricted RSASSA-SHA256 signing key under a storage key,
#    certified over its own creation.
tpm2_createprimary -C o -G rsa2048:aes128cfb -g sha256 -c srk.ctx \
  -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt' \
  > /dev/null
flush
tpm2_create -C srk.ctx -G rsa2048:rsassa-sha256:null -g sha256 -u ak.pub -r ak.priv \
  -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign' \
  --creation-data ak.creation --creation-ticket ak.ticket --creation-hash ak.hash > /dev/null
flush
tpm2_load -C srk.ctx -u ak.pub -r ak.priv -c ak.ctx > /dev/null
flush
tpm2_certifycreation -C ak.ctx -c ak.ctx -d ak.hash -t ak.ticket -g sha256 \
  -o ak.certify.sig --attestation ak.certify.attest       # a bare TPMS_ATTEST
flush

# 3. First round trip: the token, the device's data, the EK and the AK -> a challenge.
jq -n --arg token "$ENROLL_TOKEN" --arg serial "$ASSET_TAG" \
  --arg ek_cert "$(b64 ek.der)" --arg ek_public "$(b64 ek.pub)" \
  --arg ak_public "$(b64 ak.pub)" --arg creation_data "$(b64 ak.creation)" \
  --arg attestation "$(b64 ak.certify.attest)" --arg signature "$(b64 ak.certify.sig)" \
  '{token: $token, collected: {serial_number: $serial, os_type: "linux"},
    tpm: {ek_cert: $ek_cert, ek_public: $ek_public, ak_public: $ak_public,
          creation_data: $creation_data, creation_attestation: $attestation,
          creation_signature: $signature}}' > init.json
post /v1/enroll/init init.json > challenge.json

# 4. Prove the AK shares a TPM with the EK: ActivateCredential under the EK's policy
#    (PolicySecret of the endorsement hierarchy). tpm2-tools reads the credential as its
#    own file: a header (magic badcc0de, version 1), TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
{ printf '\272\334\300\336\000\000\000\001'
  jq -r .tpm.credential_blob challenge.json | base64 -d
  jq -r .tpm.encrypted_secret challenge.json | base64 -d; } > credential.bin
tpm2_startauthsession --policy-session -S session.ctx
tpm2_policysecret -S session.ctx -c e > /dev/null
tpm2_activatecredential -c ak.ctx -C ek.ctx -i credential.bin -o secret.bin \
  -P "session:session.ctx" > /dev/null
tpm2_flushcontext session.ctx
flush

# 5. Quote the PCRs the challenge names over its nonce, and read their values.
jq -r .tpm.nonce challenge.json | base64 -d > nonce.bin
pcrs=$(jq -r '.tpm.pcrs | map(tostring) | join(",")' challenge.json)
bank=$(jq -r .tpm.pcr_bank challenge.json)
tpm2_quote -c ak.ctx -l "$bank:$pcrs" -q "$(od -An -v -tx1 nonce.bin | tr -d ' \n')" \
  -g sha256 -m quote.attest -s quote.sig > /dev/null      # quote.attest: a bare TPMS_ATTEST
flush
tpm2_pcrread "$bank:$pcrs" -o pcrs.bin > /dev/null        # the digests, in PCR order
size=$(( $(wc -c < pcrs.bin) / $(echo "$pcrs" | tr , '\n' | wc -l) ))
at=0
values=$(for pcr in $(echo "$pcrs" | tr , ' '); do
  printf '{"%s": "%s"}\n' "$pcr" "$(tail -c +$((at + 1)) pcrs.bin | head -c "$size" | base64 -w0)"
  at=$((at + size))
done | jq -s add)

# 6. Second round trip: the activated secret and the quote -> the enrolled device.
jq -n --arg id "$(jq -r .challenge_id challenge.json)" --arg secret "$(b64 secret.bin)" \
  --arg attestation "$(b64 quote.attest)" --arg signature "$(b64 quote.sig)" \
  --argjson values "$values" \
  '{challenge_id: $id, tpm: {activated_secret: $secret,
    quotes: [{attestation: $attestation, signature: $signature, pcr_values: $values}]}}' \
  > complete.json
post /v1/enroll/complete complete.json | jq .device
