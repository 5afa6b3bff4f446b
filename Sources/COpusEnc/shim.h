#include <opusenc.h>

// libopusenc's ope_encoder_ctl is variadic, which Swift cannot call: one integer-valued entry
// point (requests such as OPE_SET_MUXING_DELAY_REQUEST or OPUS_SET_BITRATE_REQUEST).
static inline int parley_ope_encoder_set_int(OggOpusEnc *encoder, int request, opus_int32 value) {
    return ope_encoder_ctl(encoder, request, value);
}
