function cortexcast_frameAcquired(src, evt, varargin)
%CORTEXCAST_FRAMEACQUIRED ScanImage user function: publish every frame to cortexcast.
%   Bind it to the ScanImage event 'frameAcquired' (User Functions panel) with
%   arguments {'tcp://*:5560', 1}: the ZeroMQ endpoint to bind and the ScanImage
%   channel number to send. cortexcast's daq connects to tcp://<this PC>:5560
%   (source = "scanimage-bridge", table [daq.bridge]).
%   Needs jeromq on MATLAB's static Java class path: see docs/scanimage.md.
%
%   One message per frame, little-endian (layout version 1, 40-byte header):
%     char[4] 'CCSI' | uint16 version=1 | uint16 pixel type (1 int16, 2 uint16)
%     uint32 lines | uint32 pixels per line | uint32 channel | uint32 flags (1: last frame)
%     int64 frame number (frameNumberAcqMode) | double timestamp (s)
%     pixels, x fastest (lines x pixels per line)
%   The cortexcast side is daq/scanimage/messages.py (parse_bridge_message).

persistent ctx sock boundTo
opts = {'tcp://*:5560', 1};
opts(1:numel(varargin)) = varargin;
[endpoint, channel] = opts{:};

if isempty(sock) || ~strcmp(boundTo, endpoint)
    if ~isempty(sock), ctx.close(); end
    ctx = org.zeromq.ZContext();
    sock = ctx.createSocket(org.zeromq.SocketType.PUB);
    sock.setSndHWM(100);          % never block ScanImage: drop when cortexcast lags
    sock.bind(endpoint);
    boundTo = endpoint;
end

sd = src.hSI.hDisplay.lastStripeData;
if isempty(sd) || isempty(sd.roiData), return; end
roi = sd.roiData{1};
k = find(roi.channels == channel, 1);
if isempty(k), return; end        % that channel is not being acquired
im = roi.imageData{k}{1};
if ~roi.transposed, im = im.'; end  % [pixelsPerLine x lines]: x fastest in memory
if isa(im, 'uint16'), ptype = 2; else, im = int16(im); ptype = 1; end
[w, h] = size(im);
if ~isempty(roi.stripeFullFrameNumLines) && h < roi.stripeFullFrameNumLines(1)
    warning('cortexcast:stripe', ['frameAcquired gave a stripe of %d of %d lines; nothing ' ...
        'sent. Turn striping off: hSI.hScan2D.stripingEnable = false'], h, ...
        roi.stripeFullFrameNumLines(1));
    return
end
head = [uint8('CCSI'), typecast(uint16([1 ptype]), 'uint8'), ...
        typecast(uint32([h w channel double(sd.endOfAcquisition)]), 'uint8'), ...
        typecast(int64(sd.frameNumberAcqMode), 'uint8'), ...
        typecast(double(sd.frameTimestamp), 'uint8')];
sock.send(typecast([head, typecast(im(:).', 'uint8')], 'int8'), 0);  % int8 = Java byte[]
end
