// Non-variadic entry points for libopus' variadic opus_encoder_ctl/opus_decoder_ctl,
// which Swift cannot call. Request codes are the OPUS_*_REQUEST constants from opus_defines.h.
#ifndef PARLEY_COPUS_SHIMS_H
#define PARLEY_COPUS_SHIMS_H

#include <opus.h>

/// Sets an integer-valued encoder parameter (e.g. OPUS_SET_BITRATE_REQUEST). Returns an OPUS_* code.
int parley_opus_encoder_set_int(OpusEncoder *encoder, int request, opus_int32 value);
/// Reads an integer-valued encoder parameter (e.g. OPUS_GET_BITRATE_REQUEST). Returns an OPUS_* code.
int parley_opus_encoder_get_int(OpusEncoder *encoder, int request, opus_int32 *value);
/// Sets an integer-valued decoder parameter. Returns an OPUS_* code.
int parley_opus_decoder_set_int(OpusDecoder *decoder, int request, opus_int32 value);
/// Reads an integer-valued decoder parameter (e.g. OPUS_GET_LAST_PACKET_DURATION_REQUEST).
int parley_opus_decoder_get_int(OpusDecoder *decoder, int request, opus_int32 *value);
/// OPUS_RESET_STATE on a decoder (takes no argument).
int parley_opus_decoder_reset(OpusDecoder *decoder);

#endif
